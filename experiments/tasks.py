"""Experiments' background work: the guardrail check (queued by events, at most once a
minute per experiment) and the same check over every running experiment in maintenance."""

from __future__ import annotations

from typing import Any

from experiments.models import Experiment
from experiments.services import (
    GUARDRAILS_HANDLER,
    experiment_guardrails_check,
    experiments_guardrails_check,
)
from jobs.registry import JobContext, job_handler, maintenance_step


@job_handler(
    GUARDRAILS_HANDLER,
    timeout=120,
    max_attempts=3,
    description="Pause an experiment whose guardrail metric a variant degrades.",
)
def guardrails_check(ctx: JobContext, *, experiment_id: str) -> dict[str, Any]:
    experiment = Experiment.objects.filter(pk=experiment_id).first()
    if experiment is None:
        return {"experiment": experiment_id, "deleted": True}
    alerts = experiment_guardrails_check(experiment=experiment)
    return {"experiment": experiment_id, "alerts": [alert.message for alert in alerts]}


@maintenance_step("experiment_guardrails", order=60)
def guardrails_check_all() -> dict[str, int]:
    """Check the guardrails of every running experiment."""
    return experiments_guardrails_check()
