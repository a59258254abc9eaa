"""The tools agents may use: one registry of LangChain tools (``registry``), built-ins
registered by ``builtins`` (imported here so the registry is never empty)."""

from __future__ import annotations

from agents.tools import builtins as _builtins  # noqa: F401  (registers the built-in tools)
from agents.tools.registry import ToolContext, ToolSpec, tool_get, tool_list, tools_for

__all__ = ["ToolContext", "ToolSpec", "tool_get", "tool_list", "tools_for"]
