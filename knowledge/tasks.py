"""Knowledge's background work: processing uploaded documents."""

from __future__ import annotations

from typing import Any

from jobs.registry import JobContext, job_handler
from knowledge.models import Document, DocumentStatus
from knowledge.services import PROCESSING_HANDLER, document_process


@job_handler(
    PROCESSING_HANDLER,
    timeout=900,
    max_attempts=3,
    description="Parse, split, embed and index an uploaded document.",
)
def process_document(ctx: JobContext, *, document_id: str) -> dict[str, Any]:
    if ctx.attempt > 1:
        # An earlier attempt died mid-way (its chunks were written in one transaction that
        # never committed): two attempts of a job never overlap, so take the document back.
        Document.objects.filter(pk=document_id, status=DocumentStatus.PROCESSING).update(
            status=DocumentStatus.PENDING
        )
    # document_process claims a pending document with a conditional update and never raises.
    document = document_process(document_id=document_id)
    if document is None:
        return {"processed": False, "reason": "not pending (already processed, or deleted)"}
    return {"status": document.status, "failure_reason": document.failure_reason}
