"""Create, update and delete conversations; feedback on replies."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from agents.services import interaction_feedback_record
from conversations.checkpointer import get_checkpointer
from conversations.events import conversation_ended_emit, conversation_started_emit
from conversations.models import Conversation, Message
from conversations.services.threads import EDITABLE_FIELDS, conversation_settings_check
from core.errors import ApplicationError, NotFound
from experiments.services import turn_feedback_record


def _agent_fields(owner: User, agent: str | None) -> dict[str, Any]:
    from conversations.services.agent_turns import agent_binding

    # An agent's conversation runs the agent workflow, whatever workflow came with it.
    return agent_binding(user=owner, ref=agent)


def conversation_create(*, owner: User, agent: str | None = None, **fields: Any) -> Conversation:
    """A new, empty conversation with optional per-conversation model settings, bound to
    an agent (its id or slug) or routed to one on its first message (``agent="auto"``)."""
    unknown = set(fields) - set(EDITABLE_FIELDS)
    if unknown:
        raise ApplicationError(f"Unknown fields: {', '.join(sorted(unknown))}.")
    bound = _agent_fields(owner, agent) if agent else {}
    fields.setdefault("workflow", settings.CHATTER_DEFAULT_WORKFLOW)
    fields = {**conversation_settings_check(fields), **bound}
    with transaction.atomic():
        conversation = Conversation.objects.create(owner=owner, **fields)
        conversation_started_emit(conversation)
    return conversation


def conversation_update(
    *, conversation: Conversation, agent: str | object | None = ..., **fields: Any
) -> Conversation:
    """Change a conversation's settings, checked by the rules every surface shares; a
    given ``agent`` rebinds it (None: no agent, back to the default workflow)."""
    for name in fields:
        if name not in EDITABLE_FIELDS:
            raise ApplicationError(f"Field {name!r} cannot be changed.")
    changed = dict(conversation_settings_check(fields))
    if agent is not ...:
        owner = conversation.owner
        bound = _agent_fields(owner, agent)  # type: ignore[arg-type]
        if not agent and conversation.workflow == Conversation.Workflow.AGENT:
            bound.setdefault(
                "workflow", fields.get("workflow") or settings.CHATTER_DEFAULT_WORKFLOW
            )
        changed.update(bound)
    for name, value in changed.items():
        setattr(conversation, name, value)
    conversation.save(update_fields=[*changed, "updated_at"])
    return conversation


def conversation_delete(*, conversation: Conversation) -> None:
    """Delete the conversation, its messages and its LangGraph checkpoints."""
    thread_id = str(conversation.pk)
    with transaction.atomic():
        conversation_ended_emit(conversation, reason="deleted", at=timezone.now())
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
        # The experiments whose variant wrote the reply record the rating (user_satisfaction).
        turn_feedback_record(message_id=message.pk, scale=scale, rating=rating)
    return message
