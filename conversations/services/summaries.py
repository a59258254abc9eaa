"""Summaries: scheduled after a turn past the memory window, written by a job."""

from __future__ import annotations

from typing import Any

from conversations.models import Conversation
from conversations.providers import (
    chat_model,
    default_model_spec,
)
from conversations.services.from_sync import run_from_sync
from conversations.services.threads import (
    conversation_claim,
    conversation_release,
    memory_window,
    run_config,
)
from jobs.models import Job, JobPriority
from jobs.services import enqueue

SUMMARIZATION_HANDLER = "conversation_summarization"


def summary_schedule_if_due(*, conversation: Conversation, state: dict[str, Any]) -> Job | None:
    """After a turn: past the memory window, summarize in the background (low priority,
    one pending job per conversation), so no reply waits for a summary."""
    if len(state.get("messages") or []) <= memory_window(conversation):
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

    Holds the conversation's turn while it works (a message sent meanwhile gets 409, and a
    summary never runs during a reply: Conflict here makes the job retry later)."""
    from conversations.graph import (  # LangGraph loads with the first turn, not at django.setup()
        MODEL_NODE,
        TurnSettings,
        get_graph,
        remember,
    )

    conversation = Conversation.objects.filter(pk=conversation_id).first()
    if conversation is None:
        return {"summarized": 0, "reason": "the conversation no longer exists"}
    conversation_claim(conversation)
    try:
        model = conversation.model or default_model_spec()
        graph = get_graph(conversation.workflow)
        config = run_config(conversation, model)
        state = graph.get_state(config).values
        if not state.get("messages"):
            return {"summarized": 0}
        settings = TurnSettings.of(config)
        update = run_from_sync(
            lambda db: remember(
                state, settings, chat_model(model), trigger=memory_window(conversation)
            )
        )
        if not update:
            return {"summarized": 0}
        graph.update_state(config, update, as_node=MODEL_NODE)
        Conversation.objects.filter(pk=conversation.pk).update(
            summary=update["summary"], summarized_messages=update["summarized"]
        )
        return {"summarized": len(update["messages"]), "total_summarized": update["summarized"]}
    finally:
        conversation_release(conversation)
