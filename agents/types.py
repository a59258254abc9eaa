"""Agent types: a registry, so plugins can add their own beside the two built in."""

from __future__ import annotations

_types: dict[str, str] = {}


def register_agent_type(name: str, description: str) -> None:
    """Make ``name`` a valid agent type (plugins call this as they load)."""
    _types[name] = description


def agent_types() -> dict[str, str]:
    return dict(_types)


register_agent_type("conversational", "Talks with the user, turn by turn.")
register_agent_type("task_oriented", "Carries out a task with its tools and reports the result.")
