"""Units and their events: the sticky assignment of a unit to a variant, and the metric
events clients post for it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from core.errors import ApplicationError, Conflict
from experiments import rules
from experiments.assignment import in_window, included, targeted, variant_for
from experiments.models import (
    Assignment,
    Experiment,
    MetricEvent,
    Variant,
)
from experiments.services.guardrails import guardrails_check_soon

Status = Experiment.Status


# --- assignment ------------------------------------------------------------------------------
@dataclass(frozen=True)
class AssignmentOutcome:
    """The unit's variant, or None with why it is not in the experiment."""

    assignment: Assignment | None
    reason: str  # assigned, existing, not_started, ended, targeting, traffic
    variant: Variant | None = None


def _not_running(experiment: Experiment) -> Conflict:
    return Conflict(
        f"The experiment is {experiment.status}: only a running experiment assigns units.",
        code="experiment_not_running",
        details={"status": experiment.status},
    )


def eligibility(
    experiment: Experiment, unit_id: str, attributes: dict[str, Any], now: dt.datetime
) -> str:
    if experiment.start_at is not None and now < experiment.start_at:
        return "not_started"
    if not in_window(experiment, now):
        return "ended"
    if not targeted(experiment, attributes):
        return "targeting"
    if not included(experiment, unit_id, now):
        return "traffic"
    return "assigned"


def experiment_assign(
    *, experiment: Experiment, unit_id: str, attributes: dict[str, Any] | None = None
) -> AssignmentOutcome:
    """The unit's sticky variant: its stored assignment, else (when its attributes match the
    targeting and its traffic hash falls inside the traffic share) the variant its hash
    selects, stored now. A unit outside gets None and the reason."""
    attributes = attributes or {}
    if not isinstance(unit_id, str) or not 0 < len(unit_id) <= 200:
        raise rules.invalid("user_id", "An id of 1 to 200 characters.")
    if experiment.status != Status.RUNNING:
        raise _not_running(experiment)
    existing = (
        Assignment.objects.select_related("variant")
        .filter(experiment=experiment, unit_id=unit_id)
        .first()
    )
    if existing is not None:
        return AssignmentOutcome(existing, "existing", existing.variant)
    reason = eligibility(experiment, unit_id, attributes, timezone.now())
    if reason != "assigned":
        return AssignmentOutcome(None, reason)
    variant = variant_for(experiment, list(experiment.variants.all()), unit_id)
    assignment, created = Assignment.objects.select_related("variant").get_or_create(
        experiment=experiment,
        unit_id=unit_id,
        defaults={"variant": variant, "attributes": attributes, "source": Assignment.Source.API},
    )
    return AssignmentOutcome(assignment, "assigned" if created else "existing", assignment.variant)


# --- metric events ---------------------------------------------------------------------------
def metric_event_record(
    *, experiment: Experiment, unit_id: str, metric: str, value: float
) -> MetricEvent:
    """A client's event for an assigned unit: a custom metric, a conversion (0 or 1), ...
    Taken while the experiment runs or is paused (late events count); 409 otherwise."""
    if experiment.status not in (Status.RUNNING, Status.PAUSED):
        raise Conflict(
            f"The experiment is {experiment.status}: it takes events only while it runs or "
            "is paused.",
            code="experiment_not_running",
            details={"status": experiment.status},
        )
    definition = experiment.metrics.filter(name=metric).first()
    if definition is None:
        raise rules.invalid("metric", f"The experiment has no metric {metric!r}.")
    if definition.binomial and value not in (0, 1):
        raise rules.invalid("value", "A conversion is 0 or 1.")
    assignment = Assignment.objects.filter(experiment=experiment, unit_id=unit_id).first()
    if assignment is None:
        raise ApplicationError(
            "This unit is not in the experiment: assign it first.",
            code="not_assigned",
            details={"user_id": ["Not assigned in this experiment."]},
        )
    event = MetricEvent.objects.create(
        experiment=experiment,
        variant_id=assignment.variant_id,
        assignment=assignment,
        metric=metric,
        value=float(value),
        source=MetricEvent.Source.CLIENT,
    )
    if definition.guardrail:
        guardrails_check_soon(experiment.pk, experiment.guardrails_checked_at)
    return event
