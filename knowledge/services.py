"""Writes for the knowledge base: uploads, the processing pipeline, re-embedding."""

from __future__ import annotations

import hashlib
import logging
import time
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import PurePath, PureWindowsPath
from typing import Any
from uuid import UUID

import numpy as np
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from pgvector.psycopg import register_vector

from accounts.models import User
from accounts.services import log_action
from core.errors import ApplicationError, Conflict
from core.metrics import EMBEDDED_CHUNKS, EMBEDDING_SECONDS
from core.validation import InvalidInput, validate_metadata
from jobs.models import ACTIVE_STATUSES, Job, JobPriority
from jobs.registry import JobCancelled
from jobs.services import enqueue, jobs_cancel, max_timeout_seconds
from knowledge.embeddings import Embedder, active_embedder
from knowledge.events import document_event_emit
from knowledge.exceptions import FileTooLarge
from knowledge.models import Chunk, Document, DocumentStatus
from knowledge.parsing import extract_text, inspect_upload
from knowledge.splitting import ChunkText, split_blocks

logger = logging.getLogger(__name__)

_COPY_COLUMNS = [
    ("document_id", "uuid"),
    ("position", "int4"),
    ("page", "int4"),
    ("section", "varchar"),
    ("content", "text"),
    ("token_count", "int4"),
    ("content_hash", "varchar"),
    ("embedding", "vector"),
]


def _validate_metadata(metadata: Any) -> dict[str, Any] | None:
    """The platform's metadata rule (``core.validation``): safe keys, bounded
    depth and size. None stays None (not sent)."""
    if metadata is None:
        return None
    try:
        return validate_metadata(metadata)
    except InvalidInput as exc:
        raise ApplicationError(
            f"Invalid metadata: {exc}", code="invalid_metadata", details={"metadata": [str(exc)]}
        ) from exc


# What a multipart body may add around the file (boundaries, part headers, the other fields).
MULTIPART_ALLOWANCE_BYTES = 1024 * 1024


def upload_size_check(size: int, *, whole_request: bool = False) -> None:
    """413 ``file_too_large`` for a file over KNOWLEDGE_MAX_UPLOAD_BYTES (the one home of
    the rule); ``whole_request``: ``size`` is a request body's, allowed the multipart
    framing on top (so an upload route can refuse before reading it)."""
    limit = settings.KNOWLEDGE_MAX_UPLOAD_BYTES
    if size <= limit + (MULTIPART_ALLOWANCE_BYTES if whole_request else 0):
        return
    what = "request" if whole_request else "file"
    raise FileTooLarge(
        f"The {what} is {size} bytes; the file limit is {limit}.",
        details={"size": size, "limit": limit},
    )


def _validate_filename(filename: str) -> str:
    """A bare file name, as the client sent it: a path in it is refused, never cut off.
    (Unlike ``validate_filename``, Windows device names such as ``aux.md`` are fine: the
    name is a label here, never a file on disk.)"""
    name = unicodedata.normalize("NFC", filename or "").strip() or "upload"
    problem = None
    if any(unicodedata.category(char) == "Cc" for char in name):
        problem = "File names must not contain control characters."
    elif "/" in name or "\\" in name or name in (".", "..") or PureWindowsPath(name).drive:
        problem = "File names must not contain paths; send the bare name."
    elif len(name) > 255:
        problem = "File names are at most 255 characters."
    if problem:
        raise ApplicationError(
            f"Invalid file name: {problem}", code="invalid_filename", details={"file": [problem]}
        )
    return name


def _update_duplicate(
    document: Document, *, owner: User, metadata: dict[str, Any] | None, title: str | None
) -> Document:
    """A re-upload of the same bytes replaces the title and metadata it sends (the others
    stay as they are); the chunks are the same, so nothing is processed again."""
    changes: dict[str, Any] = {}
    if metadata is not None and metadata != document.metadata:
        changes["metadata"] = metadata
    if title and title[:255] != document.title:
        changes["title"] = title[:255]
    if changes:
        Document.objects.filter(pk=document.pk).update(**changes, updated_at=timezone.now())
        log_action(
            actor=owner,
            action="document.updated",
            target=document,
            details={"fields": sorted(changes), "via": "duplicate upload"},
        )
    return Document.objects.defer("source").get(pk=document.pk)


def document_upload(
    *,
    owner: User,
    data: bytes,
    filename: str,
    metadata: dict[str, Any] | None = None,
    title: str | None = None,
) -> tuple[Document, bool]:
    """Validate an upload, then store and process it; returns (document, created).

    Every field is checked first (size, file name, metadata, the bytes' type). A file this
    owner already uploaded (same SHA-256) returns the existing document, its title and
    metadata replaced by those given (``created`` False).
    """
    upload_size_check(len(data))
    name = _validate_filename(filename)
    metadata = _validate_metadata(metadata)
    content_type = inspect_upload(data, name)
    sha256 = hashlib.sha256(data).hexdigest()
    existing = Document.objects.defer("source").filter(owner=owner, sha256=sha256).first()
    if existing is not None:
        return _update_duplicate(existing, owner=owner, metadata=metadata, title=title), False
    try:
        with transaction.atomic():
            document = Document.objects.create(
                owner=owner,
                title=(title or PurePath(name).stem or name)[:255],
                filename=name,
                content_type=content_type,
                size=len(data),
                sha256=sha256,
                metadata=metadata or {},
                source=data,
            )
            log_action(actor=owner, action="document.uploaded", target=document)
            document_event_emit("document.uploaded", document)
    except IntegrityError:
        # The same file uploaded twice at once: the other request created it.
        existing = Document.objects.defer("source").get(owner=owner, sha256=sha256)
        return _update_duplicate(existing, owner=owner, metadata=metadata, title=title), False
    _schedule_processing(document)
    return Document.objects.defer("source").get(pk=document.pk), True


PROCESSING_HANDLER = "document_processing"


def _processing_key(document_id: UUID) -> str:
    return f"process:{document_id}"


def processing_timeout_seconds(size: int) -> int:
    """The processing job's time budget for a file of ``size`` bytes.

    Embedding dominates: one chunk per ~(chunk size - overlap) characters, at no less than
    KNOWLEDGE_MIN_CHUNKS_PER_SECOND (set well below what this machine measures, so a busy
    machine still finishes), plus a fixed allowance for the model load and parsing; capped at
    the longest timeout a job may have. The default upload limit is the largest file whose
    budget fits under that cap (see README, "Jobs").
    """
    step = max(1, settings.KNOWLEDGE_CHUNK_SIZE - settings.KNOWLEDGE_CHUNK_OVERLAP)
    chunks = size / step
    seconds = 120 + chunks / settings.KNOWLEDGE_MIN_CHUNKS_PER_SECOND
    return int(min(max_timeout_seconds(), max(300, seconds)))


def processing_remaining_seconds(chunks: int, *, rate: float | None = None) -> float:
    """What processing still needs for ``chunks`` not yet embedded: embedding them at
    ``rate`` chunks/s (at most KNOWLEDGE_MIN_CHUNKS_PER_SECOND, its default), plus the same
    fixed allowance (storing the chunks and their index entries). The job extends its
    budget by it once split (the size-based budget only guessed the chunk count: text of
    short lines makes more) and after each batch, at the rate measured, so a machine
    slower than the floor still finishes while the work moves."""
    floor = settings.KNOWLEDGE_MIN_CHUNKS_PER_SECOND
    return 120 + chunks / (floor if rate is None else max(min(rate, floor), 1e-3))


def _schedule_processing(document: Document) -> None:
    """Process in the background (a high-priority job, sent once the row commits); with
    KNOWLEDGE_PROCESS_INLINE the request does it itself (tests of parsing and search)."""
    if settings.KNOWLEDGE_PROCESS_INLINE:
        document_process(document_id=document.pk)
        return
    enqueue(
        PROCESSING_HANDLER,
        args={"document_id": str(document.pk)},
        priority=JobPriority.HIGH,
        dedupe_key=_processing_key(document.pk),
        owner=document.owner,
        timeout=processing_timeout_seconds(document.size),
    )


def document_processing_prepare(*, document_id: UUID | str) -> bool:
    """Before an attempt of the document's processing job: take the document back if an
    earlier attempt (or an earlier run of this job) left it processing or failed.

    Safe because one job at a time processes a document (the dedupe key, and two attempts of
    a job never overlap). Returns False when the document no longer exists.
    """
    Document.objects.filter(
        pk=document_id, status__in=[DocumentStatus.PROCESSING, DocumentStatus.FAILED]
    ).update(status=DocumentStatus.PENDING, progress=0, updated_at=timezone.now())
    return Document.objects.filter(pk=document_id).exists()


def document_processing_abandon(*, document_id: UUID | str, status: str, error: str) -> int:
    """The processing job ended for good without finishing (dead, failed, cancelled): the
    document ends ``failed`` with the reason, never ``processing`` forever."""
    reasons = {
        "dead": "Processing gave up after its last attempt failed",
        "failed": "Processing failed",
        "cancelled": "Processing was cancelled",
    }
    reason = reasons.get(status, f"Processing ended {status}")
    with transaction.atomic():
        updated = Document.objects.filter(
            pk=document_id, status__in=[DocumentStatus.PENDING, DocumentStatus.PROCESSING]
        ).update(
            status=DocumentStatus.FAILED,
            failure_reason=(f"{reason}: {error}" if error else f"{reason}.")[:2000],
            updated_at=timezone.now(),
        )
        _failed_event(document_id, updated)
    return updated


def _failed_event(document_id: UUID | str, updated: int) -> None:
    document = Document.objects.defer("source").filter(pk=document_id).first() if updated else None
    if document is not None:
        document_event_emit("document.failed", document, failure_reason=document.failure_reason)


def _fail(document_id: UUID, reason: str) -> None:
    with transaction.atomic():
        updated = Document.objects.filter(pk=document_id).update(
            status=DocumentStatus.FAILED, failure_reason=reason[:2000], updated_at=timezone.now()
        )
        _failed_event(document_id, updated)


def _set_progress(document_id: UUID, percent: int) -> None:
    Document.objects.filter(pk=document_id, status=DocumentStatus.PROCESSING).update(
        progress=max(0, min(100, percent)), updated_at=timezone.now()
    )


def _embed_in_batches(
    embedder: Embedder,
    texts: Sequence[str],
    on_progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    batch = settings.KNOWLEDGE_EMBEDDING_BATCH_SIZE
    vectors = []
    embedded, seconds = (
        EMBEDDED_CHUNKS.labels(embedder.space),
        EMBEDDING_SECONDS.labels(embedder.space),
    )
    for start in range(0, len(texts), batch):
        began = time.perf_counter()
        vectors.append(embedder.embed_documents(texts[start : start + batch]))
        seconds.inc(time.perf_counter() - began)
        embedded.inc(len(vectors[-1]))
        if on_progress is not None:
            on_progress(min(start + batch, len(texts)))
    return np.vstack(vectors) if vectors else np.zeros((0, 0), dtype=np.float32)


@contextmanager
def _vector_cursor() -> Iterator[Any]:
    """A psycopg cursor on Django's connection (same transaction) that knows pgvector types."""
    connection.ensure_connection()
    raw_connection = connection.connection
    register_vector(raw_connection)
    with raw_connection.cursor() as cursor:
        yield cursor


def chunks_copy(rows: Sequence[tuple[Any, ...]]) -> int:
    """Insert chunk rows (in ``_COPY_COLUMNS`` order) with binary COPY: ~30x bulk_create."""
    with _vector_cursor() as cursor:
        columns = ", ".join(name for name, _ in _COPY_COLUMNS)
        sql = f"COPY knowledge_chunk ({columns}) FROM STDIN WITH (FORMAT BINARY)"
        with cursor.copy(sql) as copy:
            copy.set_types([kind for _, kind in _COPY_COLUMNS])
            for row in rows:
                copy.write_row(row)
    return len(rows)


def _chunk_rows(
    document_id: UUID, chunks: Sequence[ChunkText], tokens: Sequence[int], vectors: np.ndarray
) -> list[tuple[Any, ...]]:
    return [
        (
            document_id,
            chunk.position,
            chunk.page,
            chunk.section,
            chunk.content,
            count,
            chunk.content_hash,
            vector,
        )
        for chunk, count, vector in zip(chunks, tokens, vectors, strict=True)
    ]


def document_process(
    *,
    document_id: UUID | str,
    on_progress: Callable[[int, str], None] | None = None,
    on_chunks: Callable[[int, int], None] | None = None,
) -> Document | None:
    """Parse, split, embed and store a pending document's chunks; never raises for bad input.

    Safe to call from a job handler: it claims the document with a conditional update, so a
    second call for a document already processing or processed does nothing. Any failure
    leaves the document ``failed`` with a reason a person can read. ``on_progress(percent,
    message)`` is called after each batch with the document's new progress, ``on_chunks(done,
    total)`` once the text is split (done 0) and after each batch; what they raise (a job's ``JobCancelled``,
    ``JobTimeout``) ends the processing and propagates.
    Returns None when the document does not exist (or was deleted meanwhile).
    """
    claimed = Document.objects.filter(pk=document_id, status=DocumentStatus.PENDING).update(
        status=DocumentStatus.PROCESSING, progress=0, failure_reason="", updated_at=timezone.now()
    )
    if claimed != 1:
        return Document.objects.defer("source").filter(pk=document_id).first()
    document = Document.objects.filter(pk=document_id).first()
    if document is None:
        return None

    def progress(percent: int, message: str) -> None:
        _set_progress(document.pk, percent)
        if on_progress is not None:
            on_progress(percent, message)

    try:
        embedder = active_embedder()
        blocks = extract_text(bytes(document.source), document.content_type)
        chunks = split_blocks(blocks, document.content_type)
        texts = [chunk.content for chunk in chunks]
        if on_chunks is not None:
            on_chunks(0, len(texts))
        progress(10, f"split into {len(texts)} chunks")
        tokens = embedder.count_tokens(texts)

        def embedded(done: int) -> None:
            progress(10 + int(85 * done / len(texts)), f"embedded {done}/{len(texts)} chunks")
            if on_chunks is not None:
                on_chunks(done, len(texts))

        vectors = _embed_in_batches(embedder, texts, embedded)
        with transaction.atomic():
            Chunk.objects.filter(document_id=document.pk).delete()
            chunks_copy(_chunk_rows(document.pk, chunks, tokens, vectors))
            processed_at = timezone.now()
            Document.objects.filter(pk=document.pk).update(
                status=DocumentStatus.PROCESSED,
                progress=100,
                embedding_space=embedder.space,
                processed_at=processed_at,
                updated_at=timezone.now(),
            )
            document_event_emit(
                "document.processed",
                document,
                status=DocumentStatus.PROCESSED,
                chunk_count=len(chunks),
                embedding_space=embedder.space,
                processed_at=processed_at,
            )
    except JobCancelled:
        raise  # the job's outcome (cancelled) and its on_give_up hook settle the document
    except ApplicationError as exc:
        _fail(document.pk, exc.message)
    except Exception as exc:
        # A parser choking on a hostile file must not take the worker down with it.
        # (JobTimeout is a BaseException: it is not caught here and ends the attempt.)
        logger.exception("processing document %s failed", document.pk)
        _fail(document.pk, f"Processing failed unexpectedly ({type(exc).__name__}: {exc}).")
    return Document.objects.defer("source").filter(pk=document.pk).first()


def _processing_active(document: Document) -> bool:
    """Whether a processing job for the document is pending, scheduled or running."""
    return Job.objects.filter(
        owner_id=document.owner_id,
        dedupe_key=_processing_key(document.pk),
        status__in=ACTIVE_STATUSES,
    ).exists()


def document_reprocess(*, document: Document, actor: User | None = None) -> Document:
    """Run the whole pipeline again from the stored bytes (after a failure or new settings).

    Refused with 409 while a processing job for the document is still active: its outcome
    would overwrite the new run's. A document left ``processing`` by a job that died for good
    (every attempt killed) has no active job, so it can be taken back this way.
    """
    if _processing_active(document):
        raise Conflict(
            "The document is already queued or being processed; reprocess it once it has finished.",
            code="document_busy",
            details={"status": document.status},
        )
    Document.objects.filter(pk=document.pk).update(
        status=DocumentStatus.PENDING, progress=0, failure_reason="", updated_at=timezone.now()
    )
    log_action(actor=actor, action="document.reprocessed", target=document)
    _schedule_processing(document)
    return Document.objects.defer("source").get(pk=document.pk)


def document_delete(*, document: Document, actor: User | None = None) -> None:
    """Delete a document with its chunks, cancelling its processing job.

    A waiting job is cancelled at once; a running one gets its cancel flag and stops after
    its current batch (it finds the document gone either way and ends ``cancelled``).
    """
    with transaction.atomic():
        jobs_cancel(
            queryset=Job.objects.filter(
                owner_id=document.owner_id,
                dedupe_key=_processing_key(document.pk),
                status__in=ACTIVE_STATUSES,
            )
        )
        log_action(actor=actor, action="document.deleted", target=document)
        document.delete()


def document_reembed(*, document_id: UUID | str, embedder: Embedder | None = None) -> int:
    """Re-embed a document's chunks in the active space; returns the number of chunks.

    One transaction per document: search sees either all old or all new vectors, and each
    document's space says which, so an interrupted re-embedding leaves nothing mixed.
    """
    embedder = embedder or active_embedder()
    chunks = list(
        Chunk.objects.filter(document_id=document_id).order_by("position").values("id", "content")
    )
    vectors = _embed_in_batches(embedder, [chunk["content"] for chunk in chunks])
    with transaction.atomic(), _vector_cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS knowledge_reembed "
            "(id bigint PRIMARY KEY, embedding vector) ON COMMIT DELETE ROWS"
        )
        cursor.execute("DELETE FROM knowledge_reembed")  # an enclosing transaction's rows
        with cursor.copy("COPY knowledge_reembed (id, embedding) FROM STDIN WITH BINARY") as copy:
            copy.set_types(["int8", "vector"])
            for chunk, vector in zip(chunks, vectors, strict=True):
                copy.write_row((chunk["id"], vector))
        cursor.execute(
            "UPDATE knowledge_chunk c SET embedding = r.embedding "
            "FROM knowledge_reembed r WHERE c.id = r.id"
        )
        Document.objects.filter(pk=document_id).update(
            embedding_space=embedder.space, updated_at=timezone.now()
        )
    return len(chunks)
