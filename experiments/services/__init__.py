"""Writes for experiments, by responsibility: definitions and lifecycle (definitions), units
and their events (units), the conversation turn's interface (turns), guardrails
(guardrails). Callers import from here."""

from experiments.services.definitions import (
    EDITABLE_WHEN_ENDED,
    EDITABLE_WHILE_RUNNING,
    FIELDS,
    TRANSITIONS,
    experiment_cancel,
    experiment_complete,
    experiment_create,
    experiment_delete,
    experiment_pause,
    experiment_start,
    experiment_update,
)
from experiments.services.guardrails import (
    GUARDRAILS_HANDLER,
    experiment_guardrails_check,
    experiments_guardrails_check,
    guardrail_breaches,
)
from experiments.services.turns import (
    TurnAssignment,
    feedback_value,
    turn_attributes,
    turn_feedback_record,
    turn_metrics_record,
    turn_overrides,
    turn_overrides_for_reply,
)
from experiments.services.units import AssignmentOutcome, experiment_assign, metric_event_record

__all__ = [
    "EDITABLE_WHEN_ENDED",
    "EDITABLE_WHILE_RUNNING",
    "FIELDS",
    "GUARDRAILS_HANDLER",
    "TRANSITIONS",
    "AssignmentOutcome",
    "TurnAssignment",
    "experiment_assign",
    "experiment_cancel",
    "experiment_complete",
    "experiment_create",
    "experiment_delete",
    "experiment_guardrails_check",
    "experiment_pause",
    "experiment_start",
    "experiment_update",
    "experiments_guardrails_check",
    "feedback_value",
    "guardrail_breaches",
    "metric_event_record",
    "turn_attributes",
    "turn_feedback_record",
    "turn_metrics_record",
    "turn_overrides",
    "turn_overrides_for_reply",
]
