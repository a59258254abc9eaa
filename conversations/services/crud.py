"""Create, update and delete conversations; feedback on replies."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from agents.services import interaction_feedback_record
from conversations.checkpointer import get_checkpointer
from conversations.models import Conversation, Message
from conversations.services.threads import EDITABLE_FIELDS, conversation_settings_check
from core.errors import ApplicationError, NotFound


def conversation_create(*, owner: User, **fields: Any) -> Conversation:
    """A new, empty conversation with optional per-conversation model settings."""
    unknown = set(fields) - set(EDITABLE_FIELDS)
    if unknown:
        raise ApplicationError(f"Unknown fields: {', '.join(sorted(unknown))}.")
    fields.setdefault("workflow", settings.CHATTER_DEFAULT_WORKFLOW)
    return Conversation.objects.create(owner=owner, **conversation_settings_check(fields))


def conversation_update(*, conversation: Conversation, **fields: Any) -> Conversation:
    """Change a conversation's settings, checked by the rules every surface shares."""
    for name in fields:
        if name not in EDITABLE_FIELDS:
            raise ApplicationError(f"Field {name!r} cannot be changed.")
    for name, value in conversation_settings_check(fields).items():
        setattr(conversation, name, value)
    conversation.save(update_fields=[*fields, "updated_at"])
    return conversation


def conversation_delete(*, conversation: Conversation) -> None:
    """Delete the conversation, its messages and its LangGraph checkpoints."""
    thread_id = str(conversation.pk)
    conversation.delete()
    get_checkpointer().delete_thread(thread_id)


# --- feedback ----------------------------------------------------------------------------------
FEEDBACK_RANGES = {Message.FeedbackScale.THUMBS: (-1, 1), Message.FeedbackScale.STARS: (1, 5)}


def message_feedback(
    *, message: Message, scale: str, rating: int, comment: str, user: User
) -> Message:
    """Rate a reply on a named scale: thumbs (-1, 0, 1) or stars (1 to 5). A reply an agent
    wrote also feeds its agent's record and, from a variant choice, its posterior
    (``agents.services.interaction_feedback_record``: a new rating replaces the last)."""
    if message.role != Message.Role.ASSISTANT:
        raise NotFound(
            "Only assistant replies take feedback; this message is not one.",
            code="not_a_reply",
            details={"message_id": ["Not an assistant reply."]},
        )
    low, high = FEEDBACK_RANGES[scale]  # type: ignore[index]
    if not low <= rating <= high:
        raise ApplicationError(
            f"On the {scale} scale, a rating is from {low} to {high}.",
            code="validation_error",
            details={"rating": [f"From {low} to {high}."]},
        )
    message.feedback_scale = scale
    message.feedback_rating = rating
    message.feedback_comment = comment
    message.feedback_at = timezone.now()
    with transaction.atomic():
        message.save(
            update_fields=["feedback_scale", "feedback_rating", "feedback_comment", "feedback_at"]
        )
        interaction_feedback_record(message_id=message.pk, scale=scale, rating=rating)
    return message
