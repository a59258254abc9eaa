from __future__ import annotations

from django.apps import AppConfig


class ConversationsConfig(AppConfig):
    """Conversations and messages on LangGraph (models arrive with the conversations issue)."""

    name = "conversations"
    verbose_name = "Conversations"

    def ready(self) -> None:
        from conversations import events  # noqa: F401  (conversation.* and message.* types)
