"""Agents made through the API, and the embedding model loaded once for routing and search."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from knowledge.embeddings import active_embedder


@pytest.fixture(scope="session")
def embedder_loaded() -> None:
    """Load the bundled model once for the session (a few seconds on 2 cores)."""
    active_embedder().embed_query("warm up")


def _payload(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "name": "Helper",
        "slug": "helper",
        "type": "conversational",
        "description": "Answers questions.",
        "system_prompt": "You are helpful.",
        "model": "local",
        "temperature": 0.3,
        "max_tokens": 512,
        "fallback_model": "",
        "capabilities": [{"name": "general", "description": "General questions."}],
        "tools": ["calculator"],
        "knowledge_filter": {},
        "status": "active",
    }
    payload.update(overrides)
    return payload


@pytest.fixture
def agent_payload() -> Callable[..., dict[str, Any]]:
    return _payload


@pytest.fixture
def create_agent() -> Callable[..., Any]:
    def create(client: APIClient, **overrides: Any) -> Any:
        return client.post("/api/v1/agents/", _payload(**overrides), format="json")

    return create


@pytest.fixture
def make_reply() -> Callable[..., Any]:
    """An assistant message in a conversation of ``user`` (made once per user), as a turn
    leaves it: what message feedback rates."""
    from conversations.models import Conversation, Message

    def make(user: Any, content: str = "An answer.") -> Message:
        conversation = Conversation.objects.filter(owner=user).first()
        if conversation is None:
            conversation = Conversation.objects.create(owner=user, title="Agent replies")
        position = conversation.messages.count()
        Message.objects.create(
            conversation=conversation, position=position, role="user", content="A question."
        )
        return Message.objects.create(
            conversation=conversation,
            position=position + 1,
            role="assistant",
            content=content,
        )

    return make
