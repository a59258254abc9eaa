"""A small MCP server for the tests, run over stdio: `python mcp_server.py`."""

from __future__ import annotations

from mcp.server.fastmcp import FastMCP

server = FastMCP("chatter-test")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def shout(text: str) -> str:
    """The text in capitals."""
    return text.upper()


if __name__ == "__main__":
    server.run()
