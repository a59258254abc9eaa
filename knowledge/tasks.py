"""Knowledge's background work: processing uploaded documents."""

from __future__ import annotations

import time
from typing import Any

from jobs.registry import GiveUp, JobCancelled, JobContext, job_handler
from knowledge.services import (
    PROCESSING_HANDLER,
    document_process,
    document_processing_abandon,
    document_processing_prepare,
    processing_remaining_seconds,
)


def _gave_up(outcome: GiveUp) -> None:
    document_processing_abandon(
        document_id=outcome.args["document_id"], status=outcome.status, error=outcome.error
    )


@job_handler(
    PROCESSING_HANDLER,
    # The default; each upload's job gets a budget derived from its size
    # (knowledge.services.processing_timeout_seconds), extended once it is split.
    timeout=900,
    max_attempts=3,
    description="Parse, split, embed and index an uploaded document.",
    on_give_up=_gave_up,
)
def process_document(ctx: JobContext, *, document_id: str) -> dict[str, Any]:
    if not document_processing_prepare(document_id=document_id):
        raise JobCancelled(f"document {document_id} was deleted")

    def on_progress(percent: int, message: str) -> None:
        # The job's progress is the document's; between batches is where a cancel is heard.
        ctx.progress(percent, message)
        ctx.raise_if_cancelled()

    split_at = 0.0

    def on_chunks(done: int, total: int) -> None:
        # The budget was guessed from the file's size; once split the work is known, and
        # each batch tells how fast it goes: the budget stays ahead while the work moves.
        nonlocal split_at
        if done == 0:
            split_at = time.monotonic()
            ctx.extend_timeout(processing_remaining_seconds(total))
        else:
            rate = done / max(time.monotonic() - split_at, 1e-3)
            ctx.extend_timeout(processing_remaining_seconds(total - done, rate=rate))

    document = document_process(
        document_id=document_id, on_progress=on_progress, on_chunks=on_chunks
    )
    if document is None:
        raise JobCancelled(f"document {document_id} was deleted while it was processed")
    return {"status": document.status, "failure_reason": document.failure_reason}
