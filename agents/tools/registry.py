"""One registry of LangChain tools, by name.

A tool is registered as a ``ToolSpec``: its name, a description for people (the admin, the
API) and a factory that builds the LangChain tool for one use (``ToolContext``: who is asking,
which agent), so a tool such as ``knowledge_search`` is bound to that user's documents and
that agent's scope. Plugins call ``tool_register``; agents name tools in their ``tools`` list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from django.conf import settings
from langchain_core.tools import BaseTool

from core.errors import ApplicationError

if TYPE_CHECKING:
    from accounts.models import User
    from agents.models import Agent


@dataclass(frozen=True)
class ToolContext:
    user: User
    agent: Agent | None = None


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    factory: Callable[[ToolContext], BaseTool]
    requires_approval: bool = False
    source: str = "builtin"


_tools: dict[str, ToolSpec] = {}


class ToolSource(Protocol):
    """Tools that live elsewhere (MCP servers registered in the database): listed and
    looked up on demand, beside the registered ones."""

    def specs(self) -> list[ToolSpec]: ...

    def spec(self, name: str) -> ToolSpec | None: ...


_sources: list[ToolSource] = []


def tool_source_register(source: ToolSource) -> None:
    if source not in _sources:
        _sources.append(source)


def tool_register(spec: ToolSpec, *, replace: bool = False) -> None:
    """Add a tool; a second tool of the same name is an error unless ``replace``."""
    if spec.name in _tools and not replace:
        raise ValueError(f"A tool named {spec.name!r} is already registered.")
    _tools[spec.name] = spec


def tool_unregister(name: str) -> None:
    _tools.pop(name, None)


def tool_registered(name: str) -> ToolSpec | None:
    """The registered tool of that name (not the sources'), as registered."""
    return _tools.get(name)


def _with_policy(spec: ToolSpec) -> ToolSpec:
    """The operator's word on approval (CHATTER_TOOLS_REQUIRING_APPROVAL) adds to the tool's."""
    if not spec.requires_approval and spec.name in settings.CHATTER_TOOLS_REQUIRING_APPROVAL:
        return replace(spec, requires_approval=True)
    return spec


def tool_get(name: str) -> ToolSpec:
    if name in _tools:
        return _with_policy(_tools[name])
    for source in _sources:
        spec = source.spec(name)
        if spec is not None:
            return _with_policy(spec)
    known = sorted(spec.name for spec in tool_list())
    raise ApplicationError(
        f"Unknown tool {name!r}.",
        code="unknown_tool",
        details={"tools": [f"Known tools: {', '.join(known)}."]},
    )


def tool_list() -> list[ToolSpec]:
    specs = dict(_tools)
    for source in _sources:
        for spec in source.specs():
            specs.setdefault(spec.name, spec)
    return [_with_policy(specs[name]) for name in sorted(specs)]


def tools_for(*, user: User, agent: Agent) -> list[BaseTool]:
    """The LangChain tools of ``agent``, bound to ``user`` (an unknown name is an error)."""
    context = ToolContext(user=user, agent=agent)
    return [tool_get(name).factory(context) for name in agent.tools]


def tool_describe(spec: ToolSpec, context: ToolContext | None = None) -> dict[str, Any]:
    return {
        "name": spec.name,
        "description": spec.description,
        "requires_approval": spec.requires_approval,
        "source": spec.source,
    }
