"""Turns of a conversation bound to an agent: binding (by id, slug or routing), the agent's
settings for each reply (its variant chosen by Thompson sampling), pausing on a tool call
that needs approval and resuming on the decision, and recording each reply as an agent
interaction."""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from accounts.models import User
from agents.models import Agent, AgentVariantChoice
from agents.runtime import agent_resolve, agent_settings
from agents.services import agent_route, interaction_record, variant_choose
from conversations.models import Conversation, Message, ToolApproval
from conversations.providers import default_model_spec
from conversations.services.threads import conversation_claim
from core.errors import ApplicationError, Conflict, NotFound
from experiments.services import turn_overrides_for_reply

if TYPE_CHECKING:
    from conversations.services.turns import RunTracker, Turn

AUTO = "auto"


def agent_binding(*, user: User, ref: str | None) -> dict[str, Any]:
    """The conversation fields for an `agent` request value: an agent's id or slug (one
    ``user`` may use), "auto" (routed on the first message), or None/"" (no agent)."""
    if not ref:
        return {"agent": None, "agent_auto": False}
    if ref == AUTO:
        return {"agent": None, "agent_auto": True, "workflow": Conversation.Workflow.AGENT}
    agent = agent_resolve(user=user, ref=ref)
    return {"agent": agent, "agent_auto": False, "workflow": Conversation.Workflow.AGENT}


def _owner(turn: Turn, user: User) -> User:
    owner_id = turn.conversation.owner_id
    return user if user.pk == owner_id else User.objects.get(pk=owner_id)


def _route(turn: Turn, owner: User) -> Agent | None:
    """Route the first message of an "auto" conversation and bind it to the best agent."""
    candidates = agent_route(user=owner, message=turn.user_message.content)
    turn.route = [
        {
            "agent": {"id": str(c.agent.pk), "slug": c.agent.slug, "name": c.agent.name},
            "score": round(c.score, 6),
            "similarity": round(c.similarity, 6),
            "performance": round(c.performance.mean, 6),
        }
        for c in candidates
    ]
    if not candidates:
        return None  # nothing to route to yet: this reply is a plain one, the next routes again
    chosen = candidates[0].agent
    Conversation.objects.filter(pk=turn.conversation.pk).update(
        agent=chosen, agent_auto=False, metadata=_with_route(turn.conversation, turn.route)
    )
    turn.conversation.agent, turn.conversation.agent_auto = chosen, False
    return chosen


def _with_route(conversation: Conversation, route: list[dict[str, Any]]) -> dict[str, Any]:
    conversation.metadata = {**conversation.metadata, "route": route}
    return conversation.metadata


def agent_turn_prepare(turn: Turn, *, user: User, choice: AgentVariantChoice | None = None) -> None:
    """Give a begun turn its agent's settings: bound agent (routed first for "auto"), the
    variant chosen for this reply (``choice`` when resuming), its tools built for the
    conversation's owner."""
    conversation = turn.conversation
    owner = _owner(turn, user)
    agent = conversation.agent if conversation.agent_id else None
    if agent is None and conversation.agent_auto:
        agent = _route(turn, owner)
    if agent is None:
        return
    if agent.status != Agent.Status.ACTIVE:
        raise Conflict(
            f"The agent {agent.slug!r} is inactive; it answers no messages.",
            code="agent_inactive",
            details={"agent": str(agent.pk)},
        )
    if choice is None:
        choice = variant_choose(agent=agent, user=owner)
    turn.agent = agent_settings(
        agent=agent, user=owner, choice=choice, default_model=default_model_spec()
    )
    turn.model = turn.assistant_message.model = turn.agent.model


# --- approvals ---------------------------------------------------------------------------------
def turn_pause(turn: Turn, tracker: RunTracker) -> tuple[Message, ToolApproval]:
    """The run stopped on a tool call that needs approval: store the pending approval and
    the reply so far (status awaiting_approval) and release the conversation. Usage is
    counted when the reply completes."""
    request = tracker.interrupts[0].value
    assistant = turn.assistant_message
    with transaction.atomic():
        approval = ToolApproval.objects.create(
            conversation=turn.conversation,
            message=assistant,
            tool_call_id=request["tool_call_id"],
            tool_name=request["name"],
            args=request["args"],
        )
        assistant.status = Message.Status.AWAITING_APPROVAL
        assistant.content = str(tracker.steps[-1].content) if tracker.steps_finished else ""
        assistant.model = turn.model
        assistant.tool_calls = tracker.tool_trace(pending=request["tool_call_id"])
        assistant.latency_ms = turn.prior_latency_ms + int((time.monotonic() - turn.started) * 1000)
        from conversations.services.turns import _reply_metadata

        assistant.metadata = {
            **assistant.metadata,
            **_reply_metadata(turn, tracker.state),
            "approval_id": str(approval.pk),
        }
        fields = ("status", "content", "model", "tool_calls", "latency_ms", "metadata")
        # An update, not save(): the turn's Message objects were inserted by raw SQL.
        Message.objects.filter(pk=assistant.pk).update(
            **{name: getattr(assistant, name) for name in fields}
        )
        if tracker.user_checkpoint:
            Message.objects.filter(pk=turn.user_message.pk).update(
                checkpoint_id=tracker.user_checkpoint
            )
            turn.user_message.checkpoint_id = tracker.user_checkpoint
        Conversation.objects.filter(pk=turn.conversation.pk).update(turn_started_at=None)
    return assistant, approval


def _visible_approval(*, user: User, conversation_id: Any, approval_id: Any) -> ToolApproval:
    approvals = ToolApproval.objects.select_related("conversation", "message")
    if not user.is_staff:
        approvals = approvals.filter(conversation__owner=user)
    approval = approvals.filter(pk=approval_id, conversation_id=conversation_id).first()
    if approval is None:
        raise NotFound("Not found.")
    return approval


DECISIONS = ("approve", "reject")


def _resumed_turn(approval: ToolApproval, user: User, decision: dict[str, Any]) -> Turn:
    from conversations.graph import get_graph
    from conversations.services.turns import Turn

    conversation = approval.conversation
    reply = approval.message
    question = (
        Message.objects.filter(
            conversation=conversation, position__lt=reply.position, role=Message.Role.USER
        )
        .order_by("-position")
        .first()
    )
    if question is None:  # a reply always follows its question; a broken record is a bug
        raise RuntimeError(f"reply {reply.pk} has no question before it")
    turn = Turn(
        conversation,
        question,
        reply,
        reply.model,
        time.monotonic(),
        resume=decision,
        prior_latency_ms=reply.latency_ms or 0,
        route=reply.metadata.get("route"),
    )
    variant = reply.metadata.get("variant") or {}
    choice = (
        AgentVariantChoice.objects.select_related("variant")
        .filter(pk=variant.get("choice_id"))
        .first()
        if variant.get("choice_id")
        else None
    )
    agent_turn_prepare(turn, user=user, choice=choice)
    # The experiments' variants the reply began under (experiments.services) still hold.
    turn.overrides, turn.experiments = turn_overrides_for_reply(message_id=reply.pk)
    turn.model = reply.model or turn.model
    turn.assistant_message.model = turn.model
    # What the paused part produced: the model messages and results after the question.
    state = get_graph(conversation.workflow).get_state(turn.config()).values
    messages = state.get("messages") or []
    ids = [str(m.id) for m in messages]
    start = ids.index(str(question.pk)) + 1 if str(question.pk) in ids else len(messages)
    turn.seeded = messages[start:]
    return turn


def approval_decide(
    *, user: User, conversation_id: Any, approval_id: Any, decision: str, reason: str = ""
) -> tuple[ToolApproval, Message]:
    """Approve or reject a pending tool call and resume its turn: an approved call runs, a
    rejected one is handed to the model as the tool's result; the reply then completes
    (or waits on the next approval). Only the conversation's owner or staff decide."""
    from conversations.services.from_sync import run_from_sync
    from conversations.services.streaming import _turn_result

    approval = _visible_approval(
        user=user, conversation_id=conversation_id, approval_id=approval_id
    )
    if decision not in DECISIONS:
        raise ApplicationError(
            "Invalid input.", code="validation_error", details={"decision": ["approve or reject."]}
        )
    status = ToolApproval.Status.APPROVED if decision == "approve" else ToolApproval.Status.REJECTED
    with transaction.atomic():
        decided = ToolApproval.objects.filter(
            pk=approval.pk, status=ToolApproval.Status.PENDING
        ).update(status=status, decided_by=user, decided_at=timezone.now(), reason=reason)
        if not decided:
            raise Conflict(
                "This tool call has already been decided.",
                code="approval_decided",
                details={"approval_id": str(approval.pk)},
            )
        conversation_claim(approval.conversation)
    approval.refresh_from_db()
    try:
        turn = _resumed_turn(approval, user, {"approved": decision == "approve", "reason": reason})
    except Exception:
        Conversation.objects.filter(pk=approval.conversation_id).update(turn_started_at=None)
        raise
    reply = run_from_sync(functools.partial(_turn_result, turn))
    return approval, reply


# --- interactions ------------------------------------------------------------------------------
def _logprobs(tracker: RunTracker | None) -> list[float] | None:
    if tracker is None or not tracker.steps_finished:
        return None
    metadata = getattr(tracker.steps[-1], "response_metadata", None) or {}
    content = (metadata.get("logprobs") or {}).get("content") or []
    values = [float(token["logprob"]) for token in content if "logprob" in token]
    return values or None


def _tool_sources(tracker: RunTracker | None) -> list[dict[str, Any]]:
    from agents.confidence import sources_from_tool_calls

    return [] if tracker is None else sources_from_tool_calls(tracker.tool_trace())


def agent_reply_record(
    turn: Turn, assistant: Message, *, tracker: RunTracker | None, error: str = ""
) -> None:
    """The reply as one of its agent's interactions (for its metrics and confidence)."""
    settings = turn.agent
    if settings is None:
        return
    interaction_record(
        agent=settings.agent,
        source="conversation",
        user=User(pk=turn.conversation.owner_id),
        choice=settings.choice,
        conversation_id=turn.conversation.pk,
        message_id=assistant.pk,
        model_used=turn.model,
        latency_ms=assistant.latency_ms,
        tokens_in=assistant.tokens_in,
        tokens_out=assistant.tokens_out,
        tool_calls=tracker.tool_trace() if tracker is not None else list(assistant.tool_calls),
        error=error,
        reply=assistant.content,
        sources=assistant.metadata.get("sources") or _tool_sources(tracker) or None,
        logprobs=_logprobs(tracker),
    )
