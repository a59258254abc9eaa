from __future__ import annotations

from django.apps import AppConfig


class KnowledgeConfig(AppConfig):
    """Documents, chunks and pgvector search (models arrive with the knowledge issue)."""

    name = "knowledge"
    verbose_name = "Knowledge base"
