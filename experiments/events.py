"""The events of the experiments app: an experiment started, paused (by an operator or a
guardrail), completed with a winner, or cancelled (emitted by the lifecycle services in the
transaction that changes the status). A guardrail's breach is also a ``system.alert``."""

from __future__ import annotations

from typing import Any

from core.events import DATETIME, STRING, UUID, event_emit, event_type_register, object_schema


def _experiment(**extra: Any) -> dict[str, Any]:
    return object_schema(
        {
            "id": UUID,
            "key": STRING,
            "name": STRING,
            "type": {"enum": ["prompt", "model", "parameter", "workflow"]},
            "status": {"enum": ["draft", "running", "paused", "completed", "cancelled"]},
            "agent_id": {"type": ["string", "null"], "format": "uuid"},
            "at": DATETIME,
            **extra,
        }
    )


event_type_register(
    "experiment.started",
    schema=_experiment(resumed={"type": "boolean", "description": "A paused one resumed."}),
    description="An experiment started assigning units and changing turns (or resumed).",
)
event_type_register(
    "experiment.paused",
    schema=_experiment(
        reason={**STRING, "description": "Empty for an operator's pause; guardrail: ... else."}
    ),
    description="An experiment was paused: by an operator, or by a degrading guardrail.",
)
event_type_register(
    "experiment.completed",
    schema=_experiment(
        winner=STRING,
        promoted_to={"enum": ["", "agent", "defaults"]},
    ),
    description="An experiment ended with its winning variant (promoted, or not).",
)
event_type_register(
    "experiment.cancelled",
    schema=_experiment(),
    description="An experiment ended without a winner.",
)


def experiment_event_emit(type: str, experiment: Any, **extra: Any) -> None:
    """Emit ``type`` about ``experiment`` (in the caller's transaction), to its owner."""
    event_emit(
        type=type,
        data={
            "id": experiment.pk,
            "key": experiment.key,
            "name": experiment.name,
            "type": experiment.type,
            "status": experiment.status,
            "agent_id": experiment.agent_id,
            "at": experiment.updated_at,
            **extra,
        },
        owner_id=experiment.owner_id,
    )
