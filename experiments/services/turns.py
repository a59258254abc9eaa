"""The interface the conversation turn calls (conversations sits above experiments):
``turn_overrides`` (the running experiments that cover a reply, and its variants'
configuration), ``turn_metrics_record`` (the reply's latency, tokens, cost and error as
metric events) and ``turn_feedback_record`` (a rating of the reply as an event)."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import Q
from django.utils import timezone

from accounts.models import User
from experiments import rules
from experiments.assignment import in_window, variant_for
from experiments.models import (
    Assignment,
    Experiment,
    Exposure,
    Metric,
    MetricEvent,
    Variant,
)
from experiments.services.guardrails import guardrails_check_soon
from experiments.services.units import eligibility

logger = logging.getLogger("chatter.experiments")

Status = Experiment.Status


# --- the conversation turn -------------------------------------------------------------------
@dataclass(frozen=True)
class TurnAssignment:
    """One experiment a reply is written under: its variant and what it records."""

    experiment_id: uuid.UUID
    key: str
    variant_id: int
    variant: str
    assignment_id: int
    configuration: dict[str, Any]
    metrics: tuple[tuple[str, str], ...] = ()  # (name, type)
    guardrails: bool = False
    guardrails_checked_at: dt.datetime | None = None

    def describe(self) -> dict[str, Any]:
        """Stored on the reply (its metadata), shown by the API and the admin."""
        return {"id": str(self.experiment_id), "key": self.key, "variant": self.variant}


def _covering(*, user: User, agent_id: Any, workflow: str) -> list[Experiment]:
    # Staff's experiments cover every user; a user's own, only their own conversations.
    scope = Q(agent_id=agent_id) if agent_id else Q(agent_id__isnull=True)
    live = Q(status=Status.RUNNING) | Q(
        status=Status.COMPLETED, promoted_to=Experiment.Promotion.DEFAULTS, winner__isnull=False
    )
    experiments = Experiment.objects.filter(
        live, scope, Q(owner__is_staff=True) | Q(owner_id=user.pk)
    )
    if workflow == "agent":  # an agent's turn runs the agent's workflow, never another
        experiments = experiments.exclude(type=Experiment.Type.WORKFLOW)
    return list(
        experiments.select_related("winner")
        .prefetch_related("variants", "metrics")
        .order_by("started_at", "id")
    )


def turn_attributes(user: User, agent_id: Any, workflow: str) -> dict[str, Any]:
    """What targeting rules see of a turn's unit (the conversation's owner)."""
    return {
        "user_id": str(user.pk),
        "username": user.username,
        "is_staff": bool(user.is_staff),
        "agent_id": str(agent_id) if agent_id else None,
        "workflow": workflow,
    }


def turn_overrides(
    *, user: User, agent_id: Any, workflow: str, message_id: Any
) -> tuple[dict[str, Any], list[TurnAssignment]]:
    """The configuration of one reply in a conversation of ``user`` (its owner) with the
    agent ``agent_id`` (None: no agent): the winners promoted to defaults, then the variant
    of each running experiment that covers it, sticky by user. Two running experiments
    that change the same setting are exclusive: a user is in the first (by start) only.
    The reply ``message_id`` is recorded as exposed to each variant."""
    try:
        return _turn_overrides(
            user=user, agent_id=agent_id, workflow=workflow, message_id=message_id
        )
    except Exception:  # an experiment must never cost a reply: it answers unchanged
        logger.exception("experiments: the turn's overrides failed; the reply is unchanged")
        return {}, []


def _turn_overrides(
    *, user: User, agent_id: Any, workflow: str, message_id: Any
) -> tuple[dict[str, Any], list[TurnAssignment]]:
    experiments = _covering(user=user, agent_id=agent_id, workflow=workflow)
    if not experiments:
        return {}, []
    now = timezone.now()
    unit_id = str(user.pk)
    overrides: dict[str, Any] = {}
    for experiment in experiments:
        if experiment.status == Status.COMPLETED and experiment.winner is not None:
            overrides.update(experiment.winner.configuration)
    running = [e for e in experiments if e.status == Status.RUNNING and in_window(e, now)]
    if not running:
        return overrides, []
    stored = {
        a.experiment_id: a
        for a in Assignment.objects.filter(experiment__in=running, unit_id=unit_id)
    }
    attributes = turn_attributes(user, agent_id, workflow)
    claimed: set[str] = set()
    chosen: list[tuple[Experiment, Variant]] = []
    new: list[Assignment] = []
    for experiment in running:
        variants = list(experiment.variants.all())
        keys = set(rules.CONFIGURATION_KEYS.get(experiment.type, ()))
        if keys & claimed or not variants:
            continue
        assignment = stored.get(experiment.pk)
        if assignment is not None:
            variant = next(v for v in variants if v.pk == assignment.variant_id)
        elif eligibility(experiment, unit_id, attributes, now) == "assigned":
            variant = variant_for(experiment, variants, unit_id)
            new.append(
                Assignment(
                    experiment=experiment,
                    variant=variant,
                    unit_id=unit_id,
                    attributes=attributes,
                    source=Assignment.Source.TURN,
                )
            )
        else:
            continue
        claimed |= keys
        chosen.append((experiment, variant))
    if new:
        # A concurrent turn of the same user may have stored it first: the same variant
        # (the hash decides), its row.
        Assignment.objects.bulk_create(new, ignore_conflicts=True)
        stored.update(
            {
                a.experiment_id: a
                for a in Assignment.objects.filter(
                    experiment__in=[a.experiment for a in new], unit_id=unit_id
                )
            }
        )
    assignments: list[TurnAssignment] = []
    for experiment, variant in chosen:
        assignment = stored[experiment.pk]
        if assignment.variant_id != variant.pk:  # stored by a concurrent turn: it holds
            variant = next(v for v in experiment.variants.all() if v.pk == assignment.variant_id)
        overrides.update(variant.configuration)
        metrics = list(experiment.metrics.all())
        assignments.append(
            TurnAssignment(
                experiment_id=experiment.pk,
                key=experiment.key,
                variant_id=variant.pk,
                variant=variant.name,
                assignment_id=assignment.pk,
                configuration=dict(variant.configuration),
                metrics=tuple((m.name, m.type) for m in metrics),
                guardrails=any(m.guardrail for m in metrics),
                guardrails_checked_at=experiment.guardrails_checked_at,
            )
        )
    if message_id is not None and assignments:
        Exposure.objects.bulk_create(
            [
                Exposure(
                    message_id=message_id,
                    experiment_id=a.experiment_id,
                    variant_id=a.variant_id,
                    assignment_id=a.assignment_id,
                    configuration=a.configuration,
                )
                for a in assignments
            ],
            ignore_conflicts=True,
        )
    return overrides, assignments


def turn_overrides_for_reply(*, message_id: Any) -> tuple[dict[str, Any], list[TurnAssignment]]:
    """A reply resumed later (after a tool approval) keeps the variants it began under."""
    exposures = (
        Exposure.objects.filter(message_id=message_id)
        .select_related("experiment", "variant")
        .prefetch_related("experiment__metrics")
        .order_by("id")
    )
    overrides: dict[str, Any] = {}
    assignments = []
    for exposure in exposures:
        overrides.update(exposure.configuration)
        metrics = list(exposure.experiment.metrics.all())
        assignments.append(
            TurnAssignment(
                experiment_id=exposure.experiment_id,
                key=exposure.experiment.key,
                variant_id=exposure.variant_id,
                variant=exposure.variant.name,
                assignment_id=exposure.assignment_id,
                configuration=dict(exposure.configuration),
                metrics=tuple((m.name, m.type) for m in metrics),
                guardrails=any(m.guardrail for m in metrics),
                guardrails_checked_at=exposure.experiment.guardrails_checked_at,
            )
        )
    return overrides, assignments


def _turn_value(
    kind: str,
    *,
    latency_ms: int | None,
    tokens_in: int,
    tokens_out: int,
    cost: Decimal | None,
    error: str,
) -> float | None:
    """The event a reply records for a metric of this type (None: nothing to record)."""
    if kind == Metric.Type.ERROR_RATE:
        return 1.0 if error else 0.0
    if kind == Metric.Type.ENGAGEMENT:
        return 1.0
    if error:  # a failed reply's latency and usage describe the failure, not the variant
        return None
    if kind == Metric.Type.RESPONSE_TIME:
        return None if latency_ms is None else float(latency_ms)
    if kind == Metric.Type.TOKEN_USAGE:
        return float(tokens_in + tokens_out)
    if kind == Metric.Type.COST:
        return None if cost is None else float(cost)
    return None


def turn_metrics_record(
    *,
    assignments: Iterable[TurnAssignment],
    message_id: Any,
    latency_ms: int | None,
    tokens_in: int,
    tokens_out: int,
    cost: Decimal | None,
    error: str = "",
) -> int:
    """A finished reply's measurements as metric events, for each experiment it was
    written under and each of its metrics the turn measures: response_time (ms),
    token_usage (in + out), cost, error_rate (0/1), engagement (1 per reply). Returns
    the events stored."""
    try:
        return _turn_metrics_record(
            assignments=list(assignments),
            message_id=message_id,
            values={
                "latency_ms": latency_ms,
                "tokens_in": tokens_in,
                "tokens_out": tokens_out,
                "cost": cost,
                "error": error,
            },
        )
    except Exception:  # the reply is stored; its measurements are not worth failing it
        logger.exception("experiments: the reply's metric events were not recorded")
        return 0


def _turn_metrics_record(
    *, assignments: list[TurnAssignment], message_id: Any, values: dict[str, Any]
) -> int:
    events = []
    for assignment in assignments:
        for name, kind in assignment.metrics:
            value = _turn_value(kind, **values)
            if value is not None:
                events.append(
                    MetricEvent(
                        experiment_id=assignment.experiment_id,
                        variant_id=assignment.variant_id,
                        assignment_id=assignment.assignment_id,
                        metric=name,
                        value=value,
                        source=MetricEvent.Source.TURN,
                        message_id=message_id,
                    )
                )
    if events:
        MetricEvent.objects.bulk_create(events, ignore_conflicts=True)
    for assignment in assignments:
        if assignment.guardrails:
            guardrails_check_soon(assignment.experiment_id, assignment.guardrails_checked_at)
    return len(events)


def feedback_value(*, scale: str, rating: int) -> float:
    """A rating on [0, 1]: thumbs -1/0/1 -> 0/0.5/1, stars 1-5 -> 0-1."""
    if scale == "stars":
        return (rating - 1) / 4
    return (rating + 1) / 2


def turn_feedback_record(*, message_id: Any, scale: str, rating: int) -> int:
    """A rating of a reply, for each running or paused experiment whose variant wrote it,
    as its user_satisfaction metrics' event (a new rating replaces the last)."""
    exposures = list(
        Exposure.objects.filter(
            message_id=message_id, experiment__status__in=(Status.RUNNING, Status.PAUSED)
        ).prefetch_related("experiment__metrics")
    )
    value = feedback_value(scale=scale, rating=rating)
    recorded = 0
    for exposure in exposures:
        for metric in exposure.experiment.metrics.all():
            if metric.type != Metric.Type.USER_SATISFACTION:
                continue
            MetricEvent.objects.update_or_create(
                experiment_id=exposure.experiment_id,
                metric=metric.name,
                message_id=message_id,
                defaults={
                    "value": value,
                    "variant_id": exposure.variant_id,
                    "assignment_id": exposure.assignment_id,
                    "source": MetricEvent.Source.FEEDBACK,
                },
            )
            recorded += 1
            if metric.guardrail:
                guardrails_check_soon(
                    exposure.experiment_id, exposure.experiment.guardrails_checked_at
                )
    return recorded
