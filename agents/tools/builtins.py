"""The built-in tools: knowledge_search, calculator, current_time, http_get."""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo

from django.conf import settings
from langchain_core.tools import BaseTool, StructuredTool, ToolException
from pydantic import BaseModel, Field

from agents.tools.calculator import CalculatorError, calculate
from agents.tools.registry import ToolContext, ToolSpec, tool_register
from core.errors import ApplicationError
from core.netguard import fetch

HTTP_GET_EXCERPT_CHARS = 20_000


class _SearchArgs(BaseModel):
    query: str = Field(description="What to look for in the user's documents.")
    k: int = Field(default=5, ge=1, le=20, description="How many passages to return.")


def _knowledge_search(context: ToolContext) -> BaseTool:
    from knowledge.selectors import knowledge_search

    scope = (context.agent.knowledge_filter if context.agent is not None else None) or None

    def search(query: str, k: int = 5) -> str:
        try:
            # own_only: an agent reads its user's documents, even for staff.
            hits = knowledge_search(
                user=context.user, query=query, k=k, metadata_filter=scope, own_only=True
            )
        except ApplicationError as exc:
            raise ToolException(exc.message) from exc
        return json.dumps(
            [
                {
                    "document": hit.document_title,
                    "document_id": str(hit.document_id),
                    "chunk_id": hit.chunk_id,
                    "content": hit.content,
                    "similarity": hit.similarity,
                }
                for hit in hits
            ]
        )

    return StructuredTool.from_function(
        func=search,
        name="knowledge_search",
        description="Search the user's documents (within this agent's knowledge scope); "
        "returns the best passages as JSON with their document titles.",
        args_schema=_SearchArgs,
        handle_tool_error=True,
    )


class _CalculatorArgs(BaseModel):
    expression: str = Field(description="Arithmetic, e.g. (2 + 3) * 4 / sqrt(16).")


def _calculator(context: ToolContext) -> BaseTool:
    def run(expression: str) -> str:
        try:
            return repr(calculate(expression))
        except CalculatorError as exc:
            raise ToolException(str(exc)) from exc

    return StructuredTool.from_function(
        func=run,
        name="calculator",
        description="Evaluate an arithmetic expression: + - * / // % **, parentheses, "
        "sqrt, exp, log, sin, cos, tan, abs, round, min, max, floor, ceil, pi, e.",
        args_schema=_CalculatorArgs,
        handle_tool_error=True,
    )


class _TimeArgs(BaseModel):
    timezone: str = Field(default="UTC", description="An IANA time zone, e.g. Europe/Paris.")


def _current_time(context: ToolContext) -> BaseTool:
    def now(timezone: str = "UTC") -> str:
        try:
            zone = zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ToolException(f"Unknown time zone {timezone!r}.") from exc
        return dt.datetime.now(zone).isoformat(timespec="seconds")

    return StructuredTool.from_function(
        func=now,
        name="current_time",
        description="The current date and time (ISO 8601) in a time zone (default UTC).",
        args_schema=_TimeArgs,
        handle_tool_error=True,
    )


class _HttpGetArgs(BaseModel):
    url: str = Field(description="An http(s) URL on the public internet.")


def _http_get(context: ToolContext) -> BaseTool:
    def get(url: str) -> str:
        try:
            result = fetch(
                url,
                max_bytes=settings.CHATTER_HTTP_GET_MAX_BYTES,
                timeout=settings.CHATTER_HTTP_GET_TIMEOUT,
            )
        except ApplicationError as exc:
            raise ToolException(exc.message) from exc
        text = result.text()
        excerpt = text[:HTTP_GET_EXCERPT_CHARS]
        return json.dumps(
            {
                "url": result.url,
                "status": result.status,
                "content_type": result.headers.get("content-type", ""),
                "truncated": result.truncated or len(text) > len(excerpt),
                "body": excerpt,
            }
        )

    return StructuredTool.from_function(
        func=get,
        name="http_get",
        description="Fetch a public web page (http or https) and return its status and text. "
        "Private and internal addresses are refused.",
        args_schema=_HttpGetArgs,
        handle_tool_error=True,
    )


tool_register(
    ToolSpec(
        name="knowledge_search",
        description="Search the user's documents within the agent's knowledge scope.",
        factory=_knowledge_search,
    ),
    replace=True,
)
tool_register(
    ToolSpec(name="calculator", description="Safe arithmetic.", factory=_calculator),
    replace=True,
)
tool_register(
    ToolSpec(name="current_time", description="The date and time now.", factory=_current_time),
    replace=True,
)
tool_register(
    ToolSpec(
        name="http_get",
        description="Fetch a public web page through the SSRF guard.",
        factory=_http_get,
    ),
    replace=True,
)
