"""Reads: the models a key's user may name, which are the agents they may use."""

from __future__ import annotations

from typing import Any

from accounts.models import User
from agents.models import Agent
from agents.runtime import agent_resolve
from agents.selectors import agent_usable
from core.errors import NotFound
from openai_api.errors import ModelNotFound


def model_list(*, user: User) -> list[Agent]:
    """The active agents ``user`` may use (their own and the shared ones), one per slug:
    the user's own before a shared one of the same slug, as ``model`` resolves it."""
    agents = agent_usable(user=user).select_related("owner").order_by("slug", "owner_id")
    seen: set[str] = set()
    models = []
    for agent in agents:  # NULL owners (shared) sort last: the own agent comes first
        if agent.slug not in seen:
            seen.add(agent.slug)
            models.append(agent)
    return models


def model_get(*, user: User, model: str) -> Agent:
    """The agent ``model`` names (its slug, or its id); another user's private agent is as
    unknown as one that does not exist (404 model_not_found)."""
    try:
        return agent_resolve(user=user, ref=model)
    except NotFound as exc:
        raise ModelNotFound(model) from exc


def model_describe(agent: Agent) -> dict[str, Any]:
    """An agent in OpenAI's model object shape."""
    return {
        "id": agent.slug,
        "object": "model",
        "created": int(agent.created_at.timestamp()),
        "owned_by": agent.owner.username if agent.owner_id else "chatter",
    }
