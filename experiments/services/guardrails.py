"""Guardrails: a variant that degrades a guardrail metric past its threshold pauses the
experiment and raises an alert. Checked by a job that events queue (at most once a minute
per experiment) and by a maintenance step over every running experiment."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from core.errors import Conflict
from core.events import alert_raise
from experiments.models import (
    Experiment,
    ExperimentAlert,
    Metric,
)
from experiments.selectors import experiment_results
from experiments.services.definitions import experiment_pause
from jobs.services import enqueue

logger = logging.getLogger("chatter.experiments")

Status = Experiment.Status
GUARDRAILS_HANDLER = "experiment_guardrails_check"
GUARDRAIL_CHECK_INTERVAL = dt.timedelta(seconds=60)


# --- guardrails ------------------------------------------------------------------------------
def guardrails_check_soon(experiment_id: Any, checked_at: dt.datetime | None) -> None:
    """Queue a guardrail check, at most once a minute per experiment: the conditional
    UPDATE lets one caller of many win the minute."""
    now = timezone.now()
    if checked_at is not None and now - checked_at < GUARDRAIL_CHECK_INTERVAL:
        return
    claimed = Experiment.objects.filter(
        Q(guardrails_checked_at__isnull=True)
        | Q(guardrails_checked_at__lt=now - GUARDRAIL_CHECK_INTERVAL),
        pk=experiment_id,
        status=Status.RUNNING,
    ).update(guardrails_checked_at=now)
    if claimed:
        enqueue(
            GUARDRAILS_HANDLER,
            args={"experiment_id": str(experiment_id)},
            dedupe_key=f"experiment-guardrails:{experiment_id}",
        )


@dataclass
class GuardrailBreach:
    metric: str
    variant: str
    lift: float
    sequential_low: float
    sequential_high: float
    threshold: float
    details: dict[str, Any] = field(default_factory=dict)


def guardrail_breaches(results: dict[str, Any]) -> list[GuardrailBreach]:
    """The guardrail metrics of ``results`` a variant degrades past their threshold: the
    relative change in the bad direction exceeds it and the sequential (always-valid)
    interval excludes no change, so checking after every event is safe."""
    breaches = []
    for metric in results["metrics"]:
        if metric["role"] != "guardrail":
            continue
        worse_up = metric["direction"] == Metric.Direction.DECREASE
        for row in metric["variants"]:
            if row["is_control"] or row["lift"] is None:
                continue
            degraded = row["lift"] if worse_up else -row["lift"]
            bound = row["sequential_ci_low"] if worse_up else -row["sequential_ci_high"]
            if degraded > metric["guardrail_threshold"] and bound > 0:
                breaches.append(
                    GuardrailBreach(
                        metric=metric["name"],
                        variant=row["variant"],
                        lift=row["lift"],
                        sequential_low=row["sequential_ci_low"],
                        sequential_high=row["sequential_ci_high"],
                        threshold=metric["guardrail_threshold"],
                        details={"count": row["count"], "mean": row["mean"]},
                    )
                )
    return breaches


def experiment_guardrails_check(*, experiment: Experiment) -> list[ExperimentAlert]:
    """Pause a running experiment whose guardrail a variant degrades, with an alert per
    breach (stored, logged as a warning, in the audit log)."""
    if experiment.status != Status.RUNNING:
        return []
    breaches = guardrail_breaches(experiment_results(experiment=experiment))
    if not breaches:
        return []
    alerts = []
    with transaction.atomic():
        try:
            experiment_pause(
                experiment=experiment,
                actor=None,
                reason="guardrail: " + ", ".join(f"{b.metric} ({b.variant})" for b in breaches),
            )
        except Conflict:
            return []  # paused or ended meanwhile: nothing to stop
        for breach in breaches:
            message = (
                f"Experiment {experiment.key!r} paused: variant {breach.variant!r} degrades "
                f"guardrail {breach.metric!r} by {abs(breach.lift):.1%} (threshold "
                f"{breach.threshold:.1%}; always-valid interval {breach.sequential_low:+.1%} "
                f"to {breach.sequential_high:+.1%})."
            )
            details = {
                "lift": breach.lift,
                "sequential_ci_low": breach.sequential_low,
                "sequential_ci_high": breach.sequential_high,
                "threshold": breach.threshold,
                **breach.details,
            }
            alerts.append(
                ExperimentAlert.objects.create(
                    experiment=experiment,
                    kind=ExperimentAlert.Kind.GUARDRAIL,
                    metric=breach.metric,
                    variant=breach.variant,
                    message=message,
                    details=details,
                )
            )
            # The platform's alert (webhooks deliver it to the owner's endpoints).
            alert_raise(
                code="experiment.guardrail",
                level="warning",
                message=message,
                owner_id=experiment.owner_id,
                details={
                    "experiment_id": str(experiment.pk),
                    "key": experiment.key,
                    "metric": breach.metric,
                    "variant": breach.variant,
                    **details,
                },
            )
            logger.warning(message)
    return alerts


def experiments_guardrails_check() -> dict[str, int]:
    """Check every running experiment that has a guardrail (the maintenance step)."""
    running = Experiment.objects.filter(status=Status.RUNNING, metrics__guardrail=True).distinct()
    paused = 0
    for experiment in running:
        if experiment_guardrails_check(experiment=experiment):
            paused += 1
    return {"checked": len(running), "paused": paused}
