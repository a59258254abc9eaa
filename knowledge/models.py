from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.db import models
from pgvector.django import HnswIndex, VectorField

# The vector column has one width for the whole deployment; every embedding space must
# produce vectors of this size (OpenAI's text-embedding-3 models are asked for 384).
EMBEDDING_DIMENSIONS = 384
# Full-text search configuration, shared by the generated tsvector, queries and highlights.
TEXT_SEARCH_CONFIG = "english"


class ContentType(models.TextChoices):
    TEXT = "text/plain", "Plain text"
    MARKDOWN = "text/markdown", "Markdown"
    HTML = "text/html", "HTML"
    PDF = "application/pdf", "PDF"
    DOCX = (
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "Word (docx)",
    )
    CSV = "text/csv", "CSV"
    JSON = "application/json", "JSON"


class DocumentStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    PROCESSING = "processing", "Processing"
    PROCESSED = "processed", "Processed"
    FAILED = "failed", "Failed"


class DocumentQuerySet(models.QuerySet["Document"]):
    def searchable(self) -> DocumentQuerySet:
        """Documents search may return: processed, or queued or running for reprocessing
        with the chunks of their last processing (replaced in one transaction when the new
        run ends, so a reprocess never hides a document meanwhile)."""
        return self.filter(
            models.Q(status=DocumentStatus.PROCESSED)
            | models.Q(
                status__in=(DocumentStatus.PENDING, DocumentStatus.PROCESSING),
                processed_at__isnull=False,
            )
        )


class Document(models.Model):
    """An uploaded file, its processing state, and (in `source`) the bytes to reprocess it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="documents"
    )
    title = models.CharField(max_length=255)
    filename = models.CharField(max_length=255)
    content_type = models.CharField(max_length=100, choices=ContentType.choices)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64, editable=False)
    metadata = models.JSONField(default=dict, blank=True)
    # The original bytes live in PostgreSQL with everything else (TOAST compresses them), so
    # any worker on any machine can (re)process the document.
    source = models.BinaryField(editable=False)
    status = models.CharField(
        max_length=20, choices=DocumentStatus.choices, default=DocumentStatus.PENDING
    )
    progress = models.PositiveSmallIntegerField(default=0, help_text="Percent, 0 to 100.")
    failure_reason = models.TextField(blank=True)
    # Which embedder produced this document's chunk vectors; search only uses chunks of
    # documents in the active space, so a re-embedding never mixes spaces.
    embedding_space = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    objects = DocumentQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "sha256"], name="knowledge_document_unique_owner_sha256"
            )
        ]
        indexes = [
            GinIndex(fields=["metadata"], name="knowledge_doc_metadata_gin"),
            models.Index(fields=["owner", "-created_at"], name="knowledge_doc_owner_created"),
        ]

    def __str__(self) -> str:
        return self.title


class Chunk(models.Model):
    """A piece of a document's text with its embedding and full-text vector."""

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    position = models.PositiveIntegerField()
    page = models.PositiveIntegerField(null=True, blank=True)
    section = models.CharField(max_length=500, blank=True)
    content = models.TextField()
    token_count = models.PositiveIntegerField()
    content_hash = models.CharField(max_length=64)
    embedding = VectorField(dimensions=EMBEDDING_DIMENSIONS)
    search_vector = models.GeneratedField(
        expression=SearchVector("content", config=TEXT_SEARCH_CONFIG),
        output_field=SearchVectorField(),
        db_persist=True,
    )

    class Meta:
        ordering = ["document", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["document", "position"], name="knowledge_chunk_unique_position"
            )
        ]
        indexes = [
            # m/ef_construction at pgvector's defaults: recall is tuned at query time with
            # hnsw.ef_search (see bench/RESULTS.md), and a bigger graph slows every insert.
            HnswIndex(
                name="knowledge_chunk_emb_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
            GinIndex(fields=["search_vector"], name="knowledge_chunk_tsv_gin"),
        ]

    def __str__(self) -> str:
        return f"{self.document_id}#{self.position}"
