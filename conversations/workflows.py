"""The registry of conversation workflow types beyond the built-in ones (plugins).

A conversation's ``workflow`` names the LangGraph graph its turns run. ``basic``, ``rag``
and ``agent`` are built in (``conversations.graph``); others are registered here by a higher
layer (the plugins app) with a builder that returns an uncompiled ``StateGraph`` over
``conversations.graph.ChatState``. Light on purpose: the settings check reads the names
without loading LangGraph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

BUILTIN_WORKFLOWS = ("basic", "rag", "agent")
# Conversation.workflow is a 20-character column.
MAX_NAME_LENGTH = 20


@dataclass(frozen=True)
class WorkflowSpec:
    name: str
    description: str
    build: Callable[[], Any]  # -> langgraph.graph.StateGraph (uncompiled)
    source: str = ""
    # Part of the compiled graph's cache key: a new revision (a plugin's new version or
    # configuration) compiles the graph again.
    revision: str = ""


_workflows: dict[str, WorkflowSpec] = {}


def workflow_register(spec: WorkflowSpec) -> None:
    """Add (or replace) a workflow type; a built-in name is refused."""
    if spec.name in BUILTIN_WORKFLOWS:
        raise ValueError(f"{spec.name!r} is a built-in workflow")
    if not spec.name or len(spec.name) > MAX_NAME_LENGTH:
        raise ValueError(f"a workflow name has 1 to {MAX_NAME_LENGTH} characters")
    _workflows[spec.name] = spec


def workflow_unregister(name: str) -> None:
    _workflows.pop(name, None)


def workflow_get(name: str) -> WorkflowSpec | None:
    return _workflows.get(name)


def workflow_names() -> list[str]:
    """Every workflow a conversation may name now: the built-ins, then the registered ones."""
    return [*BUILTIN_WORKFLOWS, *sorted(_workflows)]
