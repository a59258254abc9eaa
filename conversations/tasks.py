"""Conversations' background work: summaries and checkpoint pruning."""

from __future__ import annotations

from typing import Any

from conversations.checkpointer import checkpoints_prune_orphans
from conversations.services import SUMMARIZATION_HANDLER, conversation_summarize
from core.errors import Conflict
from jobs.registry import JobContext, job_handler, maintenance_step


@job_handler(
    SUMMARIZATION_HANDLER,
    timeout=300,
    max_attempts=5,
    description="Fold a conversation's oldest messages into its summary.",
)
def summarize_conversation(ctx: JobContext, *, conversation_id: str) -> dict[str, Any]:
    try:
        return conversation_summarize(conversation_id=conversation_id)
    except Conflict as exc:
        # A reply is running: fail this attempt so the job retries after a backoff.
        raise RuntimeError(f"conversation busy: {exc.message}") from exc


@maintenance_step("prune_orphan_checkpoints", order=50)
def prune_orphan_checkpoints() -> dict[str, int]:
    """Delete LangGraph checkpoints whose conversation no longer exists."""
    return {"deleted_threads": checkpoints_prune_orphans()}
