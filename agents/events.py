"""The events of the agents app: an agent created or changed (emitted by agents.services in
the transaction that writes it)."""

from __future__ import annotations

from typing import Any

from core.events import DATETIME, STRING, UUID, event_emit, event_type_register, object_schema


def _agent(**extra: Any) -> dict[str, Any]:
    return object_schema(
        {
            "id": UUID,
            "slug": STRING,
            "name": STRING,
            "type": STRING,
            "model": STRING,
            "status": {"enum": ["active", "inactive"]},
            "shared": {"type": "boolean", "description": "An agent every user may use."},
            "tools": {"type": "array", "items": STRING},
            "created_at": DATETIME,
            "updated_at": DATETIME,
            **extra,
        }
    )


event_type_register(
    "agent.created", schema=_agent(), description="An agent was created (yours, or a shared one)."
)
event_type_register(
    "agent.updated",
    schema=_agent(
        fields={
            "type": "array",
            "items": STRING,
            "description": "The fields the change was given (GET agents/{id}/ for the rest).",
        }
    ),
    description="An agent's settings changed; a changed system prompt is a new version in its "
    "prompt history.",
)


def agent_event_emit(type: str, agent: Any, **extra: Any) -> None:
    event_emit(
        type=type,
        data={
            "id": agent.pk,
            "slug": agent.slug,
            "name": agent.name,
            "type": agent.type,
            "model": agent.model,
            "status": agent.status,
            "shared": agent.owner_id is None,
            "tools": list(agent.tools),
            "created_at": agent.created_at,
            "updated_at": agent.updated_at,
            **extra,
        },
        # A shared agent has no owner: only endpoints that receive every user's events get it.
        owner_id=agent.owner_id,
    )
