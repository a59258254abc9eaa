"""MCP servers as a tool source, through ``langchain-mcp-adapters``.

``mcp_server_refresh`` connects to a server, lists its tools and stores their definitions
(name, description, input schema) with the server's health; a failure (a command that does
not start, a URL that does not answer, a timeout) marks it unhealthy with the error and never
raises. The tool registry then offers every tool of every enabled, healthy server as
``mcp__<server>__<tool>``; building one for an agent needs no listing call (the stored
definition is converted), and each call opens its own session to the server.
"""

from __future__ import annotations

import asyncio
from typing import Any

from asgiref.sync import async_to_sync
from django.utils import timezone
from langchain_core.tools import BaseTool

from accounts.services import log_action
from agents.models import MCPServer
from agents.tools.registry import ToolContext, ToolSpec, tool_source_register
from core.errors import ApplicationError
from core.validation import InvalidInput, validate_url

PREFIX = "mcp__"
REFRESH_TIMEOUT_SECONDS = 30.0


def _connection(server: MCPServer) -> dict[str, Any]:
    if server.transport == MCPServer.Transport.STDIO:
        return {"transport": "stdio", "command": server.command, "args": list(server.args)}
    return {"transport": "streamable_http", "url": server.url}


async def _list_tools(connection: dict[str, Any]) -> list[dict[str, Any]]:
    from langchain_mcp_adapters.sessions import create_session

    async with create_session(connection) as session:  # type: ignore[arg-type]
        await session.initialize()
        listed = await session.list_tools()
        return [tool.model_dump(mode="json", exclude_none=True) for tool in listed.tools]


def mcp_server_refresh(*, server: MCPServer, timeout: float = REFRESH_TIMEOUT_SECONDS) -> MCPServer:
    """List the server's tools and record its health; never raises for a failing server."""

    async def bounded() -> list[dict[str, Any]]:
        return await asyncio.wait_for(_list_tools(_connection(server)), timeout)

    try:
        tools = async_to_sync(bounded)()
    except Exception as exc:  # any failure of the server is its health, not ours
        message = f"{type(exc).__name__}: {exc}"
        if hasattr(exc, "exceptions"):  # anyio task groups wrap the cause
            message = "; ".join(f"{type(e).__name__}: {e}" for e in exc.exceptions)
        server.healthy, server.last_error, server.tools = False, message[:2000], []
    else:
        server.healthy, server.last_error, server.tools = True, "", tools
    server.checked_at = timezone.now()
    server.save(update_fields=["healthy", "last_error", "tools", "checked_at"])
    return server


def mcp_server_save(*, server: MCPServer, actor: Any = None) -> MCPServer:
    """Save a server registered by an operator, then list its tools (see refresh)."""
    if server.transport == MCPServer.Transport.STDIO and not server.command:
        raise ApplicationError(
            "A stdio server needs a command.", details={"command": ["Required."]}
        )
    if server.transport == MCPServer.Transport.STREAMABLE_HTTP:
        try:
            server.url = validate_url(server.url)
        except InvalidInput as exc:
            raise ApplicationError(str(exc), details={"url": [str(exc)]}) from exc
    if not isinstance(server.args, list) or not all(isinstance(a, str) for a in server.args):
        raise ApplicationError(
            "args is a list of strings.", details={"args": ["A list of strings."]}
        )
    server.save()
    log_action(actor=actor, action="agents.mcp_server.save", target=server)
    return mcp_server_refresh(server=server)


def _tool_name(server: MCPServer, tool: dict[str, Any]) -> str:
    return f"{PREFIX}{server.name}__{tool['name']}"


def _factory(server: MCPServer, definition: dict[str, Any]) -> Any:
    def build(context: ToolContext) -> BaseTool:
        from langchain_mcp_adapters.tools import convert_mcp_tool_to_langchain_tool
        from mcp.types import Tool

        tool = convert_mcp_tool_to_langchain_tool(
            None,
            Tool.model_validate(definition),
            connection=_connection(server),  # type: ignore[arg-type]
            server_name=server.name,
        )
        tool.name = _tool_name(server, definition)
        return tool

    return build


def _spec(server: MCPServer, definition: dict[str, Any]) -> ToolSpec:
    return ToolSpec(
        name=_tool_name(server, definition),
        description=definition.get("description") or definition["name"],
        factory=_factory(server, definition),
        requires_approval=definition["name"] in server.approval_tools,
        source=f"mcp:{server.name}",
    )


class MCPToolSource:
    """The registry's view of the MCP servers in the database (enabled and healthy)."""

    def specs(self) -> list[ToolSpec]:
        return [
            _spec(server, definition)
            for server in MCPServer.objects.filter(enabled=True, healthy=True)
            for definition in server.tools
        ]

    def spec(self, name: str) -> ToolSpec | None:
        if not name.startswith(PREFIX):
            return None
        server_name, _, tool_name = name[len(PREFIX) :].partition("__")
        server = MCPServer.objects.filter(name=server_name, enabled=True, healthy=True).first()
        if server is None:
            return None
        for definition in server.tools:
            if definition.get("name") == tool_name:
                return _spec(server, definition)
        return None


tool_source_register(MCPToolSource())
