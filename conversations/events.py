"""The events of the conversations app: conversations started and ended, messages received
and sent (emitted by conversations.services in the transactions that write them)."""

from __future__ import annotations

from typing import Any

from core.events import DATETIME, STRING, UUID, event_emit, event_type_register, object_schema

NULLABLE_UUID = {"type": ["string", "null"], "format": "uuid"}

event_type_register(
    "conversation.started",
    schema=object_schema(
        {
            "id": UUID,
            "title": STRING,
            "workflow": STRING,
            "model": STRING,
            "agent_id": NULLABLE_UUID,
            "parent_id": {**NULLABLE_UUID, "description": "The conversation it branches from."},
            "forked_from_id": {**NULLABLE_UUID, "description": "The conversation it copies."},
            "created_at": DATETIME,
        }
    ),
    description="A conversation was created (new, or a branch or fork of another).",
)
event_type_register(
    "conversation.ended",
    schema=object_schema(
        {
            "id": UUID,
            "title": STRING,
            "reason": {"enum": ["deleted", "archived"]},
            "message_count": {"type": "integer", "minimum": 0},
            "ended_at": DATETIME,
        }
    ),
    description=(
        "A conversation ended: deleted (through the API, a bulk delete or a retention purge) "
        "or archived (a bulk archive: exported, then removed)."
    ),
)
_MESSAGE = {
    "id": UUID,
    "conversation_id": UUID,
    "position": {"type": "integer", "minimum": 0},
    "content": STRING,
    "created_at": DATETIME,
}
event_type_register(
    "message.received",
    schema=object_schema({**_MESSAGE, "role": {"const": "user"}}),
    description="A user's message was stored (before the reply is produced).",
)
event_type_register(
    "message.sent",
    schema=object_schema(
        {
            **_MESSAGE,
            "role": {"const": "assistant"},
            "status": {"enum": ["complete", "incomplete"]},
            "model": STRING,
            "tokens_in": {"type": "integer", "minimum": 0},
            "tokens_out": {"type": "integer", "minimum": 0},
            "latency_ms": {"type": ["integer", "null"]},
            "cost": {"type": ["string", "null"], "description": "A decimal, null when unpriced."},
        }
    ),
    description="A reply was stored: complete, or incomplete when its stream was cut short.",
)


def conversation_started_emit(conversation: Any) -> None:
    event_emit(
        type="conversation.started",
        data={
            "id": conversation.pk,
            "title": conversation.title,
            "workflow": conversation.workflow,
            "model": conversation.model,
            "agent_id": conversation.agent_id,
            "parent_id": conversation.parent_id,
            "forked_from_id": conversation.forked_from_id,
            "created_at": conversation.created_at,
        },
        owner_id=conversation.owner_id,
    )


def conversation_ended_emit(conversation: Any, *, reason: str, at: Any) -> None:
    event_emit(
        type="conversation.ended",
        data={
            "id": conversation.pk,
            "title": conversation.title,
            "reason": reason,
            "message_count": conversation.message_count,
            "ended_at": at,
        },
        owner_id=conversation.owner_id,
    )


def message_event_emit(type: str, message: Any, *, owner_id: int, **extra: Any) -> None:
    event_emit(
        type=type,
        data={
            "id": message.pk,
            "conversation_id": message.conversation_id,
            "position": message.position,
            "role": message.role,
            "content": message.content,
            "created_at": message.created_at,
            **extra,
        },
        owner_id=owner_id,
    )
