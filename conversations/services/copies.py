"""Copies of a conversation without re-running the model: branch and fork."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import transaction

from accounts.models import User
from conversations.checkpointer import thread_config
from conversations.events import conversation_started_emit
from conversations.models import Conversation, Message
from conversations.services.streaming import message_send
from conversations.services.threads import EDITABLE_FIELDS
from conversations.services.turns import message_content_check
from core.errors import ApplicationError, Conflict


# --- branch and fork ---------------------------------------------------------------------------
def _checkpoint_source(message: Message) -> Message:
    """The message whose own thread holds a checkpoint for it (copies point at originals)."""
    seen = 0
    while not message.checkpoint_id and message.metadata.get("copied_from") and seen < 100:
        original = Message.objects.filter(pk=message.metadata["copied_from"]).first()
        if original is None:
            break
        message, seen = original, seen + 1
    if not message.checkpoint_id:
        raise ApplicationError(
            "This message has no checkpoint to branch from (its turn did not complete).",
            code="not_branchable",
            details={"message_id": ["Choose a message from a completed turn."]},
            status=409,  # the message exists; its turn's state is what refuses
        )
    return message


_COPIED_MESSAGE_FIELDS = (
    "position",
    "role",
    "content",
    "tool_calls",
    "status",
    "error",
    "model",
    "tokens_in",
    "tokens_out",
    "cost",
    "latency_ms",
)


def _total_cost(rows: list[Message]) -> Decimal | None:
    costs = [m.cost for m in rows]
    return None if None in costs else sum(costs, Decimal(0))  # type: ignore[arg-type]


def _copy_into(
    *,
    source: Conversation,
    owner: User,
    rows: list[Message],
    values: dict[str, Any],
    lineage: dict[str, Any],
) -> Conversation:
    """A new conversation with `source`'s settings, copies of `rows` as new rows, and a
    LangGraph thread seeded with the checkpointed `values`, without calling the model."""
    from conversations.graph import (  # LangGraph loads with the first turn, not at django.setup()
        MODEL_NODE,
        get_graph,
    )

    graph = get_graph(source.workflow)
    with transaction.atomic():
        copy = Conversation.objects.create(
            owner=owner,
            # The source's settings, with a title of its own and a copy of the metadata.
            **{
                **{name: getattr(source, name) for name in EDITABLE_FIELDS},
                "title": lineage.pop("title"),
                "metadata": dict(source.metadata),
            },
            agent_id=source.agent_id,
            agent_auto=source.agent_auto,
            summary=values.get("summary", ""),
            summarized_messages=values.get("summarized", 0),
            message_count=len(rows),
            tokens_in=sum(m.tokens_in for m in rows),
            tokens_out=sum(m.tokens_out for m in rows),
            cost=_total_cost(rows),
            **lineage,
        )
        conversation_started_emit(copy)
        new_ids: dict[str, str] = {}
        copies = []
        for row in rows:
            clone = Message(
                conversation=copy,
                **{name: getattr(row, name) for name in _COPIED_MESSAGE_FIELDS},
                metadata={
                    **row.metadata,
                    "copied_from": str(row.pk),
                    # Every id this message has had: checkpoints of any ancestor thread
                    # carry one of them, and seeding maps them all to the new row.
                    "origin_ids": [*row.metadata.get("origin_ids", []), str(row.pk)],
                },
            )
            for origin in clone.metadata["origin_ids"]:
                new_ids[origin] = str(clone.pk)
            copies.append(clone)
        Message.objects.bulk_create(copies)
        values = dict(values)
        values["messages"] = [
            m.model_copy(update={"id": new_ids.get(str(m.id), m.id)})
            for m in values.get("messages", [])
        ]
        if values["messages"] or values.get("summary"):
            seeded = graph.update_state(thread_config(str(copy.pk)), values, as_node=MODEL_NODE)
            # The seeded state ends with this message: a branch from it starts there. (Not
            # always the last row: a failed reply is in the record but not in the state.)
            last = values["messages"][-1].id if values["messages"] else None
            Message.objects.filter(conversation=copy, pk=last).update(
                checkpoint_id=seeded["configurable"]["checkpoint_id"]
            )
    return copy


def _history_through(message: Message) -> tuple[list[Message], dict[str, Any]]:
    """The rows up to and including `message` and the state checkpointed at it."""
    anchor = _checkpoint_source(message)
    from conversations.graph import get_graph

    snapshot = get_graph(message.conversation.workflow).get_state(
        thread_config(str(anchor.conversation_id), anchor.checkpoint_id)
    )
    rows = list(message.conversation.messages.filter(position__lte=message.position))
    return rows, dict(snapshot.values)


def conversation_branch(
    *, conversation: Conversation, message: Message, user: User, content: str | None = None
) -> Conversation:
    """A new conversation continuing `conversation` from `message`.

    At a reply: the history up to and including it. At a user message: edit and resend,
    i.e. the history before it, then that message (or `content`, its edited text) sent as
    the branch's next turn, so the branch ends answered rather than with a question twice."""
    if message.conversation_id != conversation.pk:
        raise ApplicationError(
            "The message is not part of this conversation.",
            code="validation_error",
            details={"message_id": ["Not a message of this conversation."]},
        )
    resend = message.role == Message.Role.USER
    if content is not None and not resend:
        # The body is well formed; the message it names is not one it applies to (a state
        # of the target, as schemathesis and RFC 9110 read 409).
        raise Conflict(
            "`content` edits a user message: branch at one to resend it changed.",
            code="not_a_user_message",
            details={"content": ["Only when message_id is a user message."]},
        )
    lineage = {
        "parent": conversation,
        "branch_point": message,
        "title": f"{conversation} (branch)"[:300],
    }
    if not resend:
        rows, values = _history_through(message)
        return _copy_into(
            source=conversation, owner=user, rows=rows, values=values, lineage=lineage
        )
    text = message_content_check(message.content if content is None else content)
    before = conversation.messages.filter(position__lt=message.position).order_by("-position")
    previous = before.first()
    rows, values = _history_through(previous) if previous is not None else ([], {})
    branch = _copy_into(source=conversation, owner=user, rows=rows, values=values, lineage=lineage)
    try:
        message_send(user=user, conversation_id=branch.pk, content=text)
    except ApplicationError as exc:
        # The branch exists, with the message and the failed reply: say where.
        exc.details = {**exc.details, "conversation_id": str(branch.pk)}  # type: ignore[dict-item]
        raise
    branch.refresh_from_db()
    return branch


def conversation_fork(*, conversation: Conversation, user: User) -> Conversation:
    """An independent full copy of `conversation`: every message, and the thread's latest
    state (a failed last turn included: its question, unanswered; and any later summary)."""
    from conversations.graph import get_graph

    state = get_graph(conversation.workflow).get_state(thread_config(str(conversation.pk)))
    return _copy_into(
        source=conversation,
        owner=user,
        rows=list(conversation.messages.all()),
        values=dict(state.values),
        lineage={"forked_from": conversation, "title": f"{conversation} (fork)"[:300]},
    )
