from __future__ import annotations

from django.apps import AppConfig


class AgentsConfig(AppConfig):
    """Configurable agents, tools and routing (models arrive with the agents issue)."""

    name = "agents"
    verbose_name = "Agents"

    def ready(self) -> None:
        from agents import events, mcp  # noqa: F401  (agent.* event types; MCP tool sources)
