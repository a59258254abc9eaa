"""Thread settings and claims: what a conversation runs with, and who holds its turn."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Q
from django.db.models.functions import Now

from conversations.checkpointer import thread_config
from conversations.models import Conversation
from conversations.providers import (
    validate_spec,
)
from conversations.workflows import workflow_names
from core.errors import ApplicationError, Conflict

EDITABLE_FIELDS = (
    "workflow",
    "title",
    "model",
    "temperature",
    "max_tokens",
    "system_prompt",
    "memory_window",
    "relevance_floor",
    "metadata",
)


def conversation_settings_check(fields: dict[str, Any]) -> dict[str, Any]:
    """Check settings against the rules every surface shares (the API, the admin, other
    apps' calls): each field's own (its type, choices and range, declared on the model),
    and a model spec naming a known provider. A 400 naming each field that fails."""
    errors: dict[str, list[str]] = {}
    for name, value in fields.items():
        if name not in EDITABLE_FIELDS:
            continue  # the caller says what it refuses (unknown or read-only fields)
        if name == "workflow":
            # The built-in choices and the workflows plugins registered in this process.
            if value not in workflow_names():
                errors[name] = [f'"{value}" is not one of: {", ".join(workflow_names())}.']
            continue
        try:
            Conversation._meta.get_field(name).clean(value, None)
        except DjangoValidationError as exc:
            errors[name] = list(exc.messages)
    if errors:
        raise ApplicationError("Invalid input.", code="validation_error", details=errors)
    if fields.get("model"):
        validate_spec(fields["model"])
    return fields


def run_config(conversation: Conversation, model: str, *, reply_id: str = "") -> dict[str, Any]:
    """The graph config for this conversation: its thread and its model settings."""
    configurable = thread_config(str(conversation.pk))["configurable"]
    return {
        "configurable": {
            **configurable,
            "model": model,
            "temperature": conversation.temperature,
            "max_tokens": conversation.max_tokens,
            "system_prompt": conversation.system_prompt,
            "memory_window": memory_window(conversation),
            "reply_id": reply_id,
            "user_id": conversation.owner_id,
            "relevance_floor": relevance_floor(conversation),
        }
    }


def memory_window(conversation: Conversation) -> int:
    return conversation.memory_window or settings.CHATTER_MEMORY_WINDOW


def relevance_floor(conversation: Conversation) -> float:
    floor = conversation.relevance_floor
    return settings.CHATTER_RAG_RELEVANCE_FLOOR if floor is None else floor


def _idle() -> Q:
    return Q(turn_started_at__isnull=True) | Q(
        turn_started_at__lt=Now() - timedelta(seconds=settings.CHATTER_TURN_STALE_SECONDS)
    )


def _busy() -> Conflict:
    return Conflict(
        "A reply is still being produced in this conversation; send again when it ends.",
        code="turn_in_progress",
    )


def conversation_claim(conversation: Conversation) -> None:
    """Take the conversation's turn for work other than a new message (resuming a turn after
    an approval): one statement only one caller can win; 409 when a reply is running."""
    if not Conversation.objects.filter(_idle(), pk=conversation.pk).update(turn_started_at=Now()):
        raise _busy()


def conversation_idle_check(conversation: Conversation) -> None:
    """409 when a reply is running in the conversation (nothing is taken)."""
    if not Conversation.objects.filter(_idle(), pk=conversation.pk).exists():
        raise _busy()


def conversation_lock_idle(conversation: Conversation) -> None:
    """Lock the conversation's row until the surrounding transaction ends, provided no reply
    is running (409 otherwise). A turn that begins meanwhile waits for the lock (its claim
    is an UPDATE of this row) rather than being refused, so hold it only for milliseconds."""
    if not Conversation.objects.select_for_update().filter(_idle(), pk=conversation.pk).exists():
        raise _busy()
