from __future__ import annotations

from collections import Counter
from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from core.admin_base import ReadOnlyModelAdmin
from core.errors import ApplicationError, Conflict
from knowledge.models import Chunk, Document
from knowledge.search import knowledge_search
from knowledge.services import document_reprocess

# all-MiniLM-L6-v2 puts unrelated passages around 0-0.2 and related ones from ~0.3 up.
SEMANTIC_SEARCH_THRESHOLD = 0.3


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = [
        "title",
        "owner",
        "content_type",
        "status",
        "progress",
        "chunk_count",
        "size",
        "embedding_space",
        "created_at",
    ]
    list_filter = ["status", "content_type", "embedding_space"]
    list_select_related = ["owner"]
    search_fields = ["title"]
    search_help_text = (
        "A semantic query: documents with a passage similar to it (cosine similarity "
        f"≥ {SEMANTIC_SEARCH_THRESHOLD}), and documents whose title contains it."
    )
    actions = ["reprocess"]
    exclude = ["source"]
    readonly_fields = [
        "id",
        "chunk_count",
        "owner",
        "filename",
        "content_type",
        "size",
        "sha256",
        "status",
        "progress",
        "failure_reason",
        "embedding_space",
        "created_at",
        "updated_at",
        "processed_at",
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Document]:
        return super().get_queryset(request).defer("source").annotate(_chunks=Count("chunks"))

    @admin.display(description="chunks", ordering="_chunks")
    def chunk_count(self, obj: Any) -> str:
        if not obj._chunks:
            return "0"
        url = reverse("admin:knowledge_chunk_changelist") + f"?document__id__exact={obj.pk}"
        return format_html('<a href="{}">{}</a>', url, obj._chunks)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # documents come in through the upload API, which types and checks them

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Document], search_term: str
    ) -> tuple[QuerySet[Document], bool]:
        by_title, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        if not search_term.strip():
            return by_title, may_have_duplicates
        try:
            hits = knowledge_search(
                user=request.user,  # type: ignore[arg-type]
                query=search_term,
                k=50,
                mode="vector",
                similarity_threshold=SEMANTIC_SEARCH_THRESHOLD,
            )
        except ApplicationError as exc:
            self.message_user(request, f"Semantic search failed: {exc.message}", messages.ERROR)
            return by_title, may_have_duplicates
        semantic = queryset.filter(pk__in={hit.document_id for hit in hits})
        return by_title | semantic, may_have_duplicates

    @admin.action(description="Reprocess selected documents")
    def reprocess(self, request: HttpRequest, queryset: QuerySet[Document]) -> None:
        outcomes: Counter[str] = Counter()
        for document in queryset:
            try:
                result = document_reprocess(document=document, actor=request.user)  # type: ignore[arg-type]
            except Conflict:
                outcomes["busy"] += 1
                continue
            outcomes[result.status] += 1
        parts = [
            f"{outcomes[key]} {label}"
            for key, label in (
                ("pending", "queued for processing"),
                ("processed", "processed"),
                ("failed", "failed"),
                ("busy", "skipped (already queued or processing)"),
            )
            if outcomes[key]
        ]
        trouble = outcomes["failed"] or outcomes["busy"]
        self.message_user(
            request,
            "Reprocess: " + ", ".join(parts) + ".",
            messages.WARNING if trouble else messages.SUCCESS,
        )


@admin.register(Chunk)
class ChunkAdmin(ReadOnlyModelAdmin):
    """How documents were split, read-only (chunks are rebuilt by reprocessing): a page per
    document from its chunk count, in order."""

    list_display = ["position", "document", "page", "section", "token_count", "preview"]
    list_filter = [("document", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["document"]
    search_fields = ["content"]
    ordering = ["document", "position"]
    fields = ["document", "position", "page", "section", "token_count", "content_hash", "content"]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Chunk]:
        return super().get_queryset(request).defer("embedding", "search_vector")

    @admin.display(description="text")
    def preview(self, obj: Chunk) -> str:
        return obj.content[:160] + ("…" if len(obj.content) > 160 else "")
