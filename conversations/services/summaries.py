"""Summaries: scheduled after a turn past the memory window, written by a job."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from conversations.models import Conversation
from conversations.providers import (
    chat_model,
    default_model_spec,
)
from conversations.services.from_sync import run_from_sync
from conversations.services.threads import (
    conversation_idle_check,
    conversation_lock_idle,
    memory_window,
    run_config,
)
from jobs.models import Job, JobPriority
from jobs.services import enqueue

SUMMARIZATION_HANDLER = "conversation_summarization"


def summary_schedule_if_due(
    *, conversation: Conversation, state: dict[str, Any], context_before: int | None = None
) -> Job | None:
    """After a turn: past the memory window, summarize in the background (low priority,
    one pending job per conversation), so no reply waits for a summary.

    Given ``context_before`` (the messages in the model's context before this turn), only
    the turn that crosses the window schedules: every later turn would find the same job
    pending (a failed insert and a read per turn, for nothing). Once the summary runs the
    context is back under the window and the next crossing schedules again; if the job
    fails for good, the turn's inline summary at twice the window takes over."""
    window = memory_window(conversation)
    context = len(state.get("messages") or [])
    if context <= window or (context_before is not None and context_before > window):
        return None
    return enqueue(
        SUMMARIZATION_HANDLER,
        args={"conversation_id": str(conversation.pk)},
        priority=JobPriority.LOW,
        dedupe_key=f"summarize:{conversation.pk}",
        owner=conversation.owner,
    )


def conversation_summarize(*, conversation_id: str) -> dict[str, Any]:
    """Fold the oldest messages of the model's context into the summary, now.

    The summary is written beside the conversation, not in its way: the slow part (the
    model writing the summary) holds nothing, so the user may send meanwhile. Only the
    update itself (a checkpoint write, milliseconds) runs under the conversation's row lock,
    taken only while no reply runs; a turn that starts then waits for the lock instead of
    being refused. A reply running at either moment is a Conflict: the job retries later.
    An update that a reply's own inline summary overtook is dropped, not applied twice."""
    from conversations.graph import (  # LangGraph loads with the first turn, not at django.setup()
        MODEL_NODE,
        TurnSettings,
        get_graph,
        remember,
    )

    conversation = Conversation.objects.filter(pk=conversation_id).first()
    if conversation is None:
        return {"summarized": 0, "reason": "the conversation no longer exists"}
    conversation_idle_check(conversation)
    model = conversation.model or default_model_spec()
    graph = get_graph(conversation.workflow)
    config = run_config(conversation, model)
    state = graph.get_state(config).values
    if not state.get("messages"):
        return {"summarized": 0}
    settings = TurnSettings.of(config)
    update = run_from_sync(
        lambda db: remember(state, settings, chat_model(model), trigger=memory_window(conversation))
    )
    if not update:
        return {"summarized": 0}
    with transaction.atomic():
        conversation_lock_idle(conversation)
        current = graph.get_state(config).values
        present = {m.id for m in current.get("messages") or []}
        if current.get("summarized", 0) != state.get("summarized", 0) or not all(
            removal.id in present for removal in update["messages"]
        ):
            return {"summarized": 0, "reason": "a reply summarized the conversation meanwhile"}
        graph.update_state(config, update, as_node=MODEL_NODE)
        Conversation.objects.filter(pk=conversation.pk).update(
            summary=update["summary"], summarized_messages=update["summarized"]
        )
    return {"summarized": len(update["messages"]), "total_summarized": update["summarized"]}
