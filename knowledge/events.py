"""The events of the knowledge app: a document's upload and the end of its processing
(emitted by knowledge.services in the transactions that change the document)."""

from __future__ import annotations

from typing import Any

from core.events import DATETIME, STRING, UUID, event_emit, event_type_register, object_schema


def _document(status: list[str], **extra: Any) -> dict[str, Any]:
    return object_schema(
        {
            "id": UUID,
            "title": STRING,
            "filename": STRING,
            "content_type": STRING,
            "size": {"type": "integer", "minimum": 0},
            "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "metadata": {"type": "object"},
            "status": {"enum": status},
            "created_at": DATETIME,
            **extra,
        }
    )


event_type_register(
    "document.uploaded",
    schema=_document(["pending", "processing"]),
    description="A document was uploaded (a new file; re-uploading the same bytes is not one). "
    "Processing follows in the background.",
)
event_type_register(
    "document.processed",
    schema=_document(
        ["processed"],
        chunk_count={"type": "integer", "minimum": 0},
        embedding_space=STRING,
        processed_at=DATETIME,
    ),
    description="A document was parsed, split and embedded: its chunks are searchable.",
)
event_type_register(
    "document.failed",
    schema=_document(["failed"], failure_reason=STRING),
    description="A document's processing failed; failure_reason says why (fix the cause and "
    "POST documents/{id}/reprocess/).",
)


def document_event_emit(type: str, document: Any, **extra: Any) -> None:
    """Emit a document event from ``document`` (a Document, its current values in ``extra``)."""
    data = {
        "id": document.pk,
        "title": document.title,
        "filename": document.filename,
        "content_type": document.content_type,
        "size": document.size,
        "sha256": document.sha256,
        "metadata": document.metadata,
        "status": document.status,
        "created_at": document.created_at,
        **extra,
    }
    event_emit(type=type, data=data, owner_id=document.owner_id)
