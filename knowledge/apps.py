from __future__ import annotations

from django.apps import AppConfig


class KnowledgeConfig(AppConfig):
    """Documents, chunks and pgvector search."""

    name = "knowledge"
    verbose_name = "Knowledge base"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from core.probes import report_register
        from knowledge import events  # noqa: F401  (document.* event types)
        from knowledge.embeddings import embedding_status

        report_register("embeddings", embedding_status)

        # Each django-q2 worker process (forked by qcluster; the signal fires only there)
        # loads the embedding model in the background as it starts, so its first
        # document or RAG job does not wait for it.
        post_spawn.connect(_warm_worker, dispatch_uid="knowledge.warm_embeddings", weak=False)


def _warm_worker(sender: object, **kwargs: object) -> None:
    from knowledge.embeddings import embeddings_warm

    embeddings_warm()
