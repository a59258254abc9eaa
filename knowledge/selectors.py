"""Reads for the knowledge base: documents, their chunks. Search (``knowledge_search``, the
public read service other apps call) has its own module, ``knowledge.search``."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.db.models import Count, QuerySet

from accounts.models import User
from accounts.selectors import visible_to
from core.errors import NotFound
from knowledge.models import Chunk, Document, DocumentStatus


# --- Documents -------------------------------------------------------------------------------
def document_list(*, user: User) -> QuerySet[Document]:
    """The documents the user may see, with their chunk counts (never their bytes)."""
    documents = Document.objects.defer("source").select_related("owner")
    return (
        visible_to(documents, user)
        .annotate(chunk_count=Count("chunks"))
        .order_by("-created_at", "-pk")  # Meta.ordering does not apply to GROUP BY queries
    )


def document_get(*, user: User, document_id: UUID | str) -> Document:
    document = document_list(user=user).filter(pk=document_id).first()
    if document is None:
        raise NotFound("Not found.")
    return document


def chunk_list(*, document: Document) -> QuerySet[Chunk]:
    return (
        Chunk.objects.filter(document=document)
        .defer("embedding", "search_vector")
        .order_by("position")
    )


def documents_to_reembed(*, space: str, everything: bool = False) -> list[tuple[UUID, int]]:
    """(document id, chunk count) of processed documents outside ``space`` (or all)."""
    documents = Document.objects.filter(status=DocumentStatus.PROCESSED)
    if not everything:
        documents = documents.exclude(embedding_space=space)
    return list(
        documents.annotate(chunk_count=Count("chunks"))
        .order_by("created_at")
        .values_list("id", "chunk_count")
    )


def __getattr__(name: str) -> Any:
    # The public read service's first home: ``from knowledge.selectors import
    # knowledge_search`` keeps working (imported lazily: knowledge.search imports this module).
    if name in ("knowledge_search", "SearchHit"):
        from knowledge import search

        return getattr(search, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
