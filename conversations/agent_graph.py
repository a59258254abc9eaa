"""The `agent` workflow: model -> tools -> model, until the model answers without a tool.

The agent's tools (built for this turn's user, see agents.runtime), which of them need a
person's approval, the fallback model and the iteration bound travel in
`config["configurable"]` like the other per-turn settings, so one compiled graph serves
every agent. Tool calls of one step run concurrently (langgraph's ToolNode gathers them);
a sync tool (the built-ins: knowledge_search reads the database) runs through the turn's
database runner, async ones (MCP) on the loop. A tool's exception becomes its ToolMessage
(status error), which the model reads as the result. A call that needs approval pauses the
turn with `interrupt()` before any tool of the step runs, so a resumed step never repeats
a call; the decision comes back through `Command(resume=...)`.

Callers with tools of their own (the OpenAI-compatible API's client-supplied `tools`) pass
them as `client_tools` (OpenAI function definitions, bound beside the agent's): a step that
calls one of them ends the run, its calls left for the caller to answer. `tool_choice`
applies to the run's first model call (`tool_choice_until`: the input's message count), so
a forced choice cannot loop through the agent's own tools.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

from django.conf import settings as django_settings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool
from langgraph.errors import GraphBubbleUp
from langgraph.graph import END, START, StateGraph
from langgraph.prebuilt import ToolNode
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import interrupt

from conversations.graph import (
    MODEL_NODE,
    ChatState,
    TurnSettings,
    _model_for,
    _prompt,
    _remembered,
    _with_reply,
    remember,
)
from conversations.providers import ModelOptions, chat_model, provider_failure
from core.asyncdb import db_call
from core.errors import ApplicationError

logger = logging.getLogger(__name__)

TOOLS_NODE = "tools"


class ToolIterationsExceeded(ApplicationError):
    status = 422
    code = "tool_iterations_exceeded"


def _tool_rounds(state: ChatState) -> int:
    """How many times this turn's model has asked for tools (since the user's message)."""
    rounds = 0
    for message in reversed(state["messages"]):
        if message.type == "human":
            break
        if message.type == "ai" and getattr(message, "tool_calls", None):
            rounds += 1
    return rounds


def _with_tools(
    model: BaseChatModel,
    tools: list[BaseTool],
    client_tools: list[dict[str, Any]] | None = None,
    tool_choice: str | None = None,
) -> Any:
    offered: list[Any] = [*tools, *(client_tools or [])]
    if not offered or tool_choice == "none":
        return model
    try:
        if tool_choice in (None, "auto"):
            return model.bind_tools(offered)
        return model.bind_tools(offered, tool_choice=tool_choice)
    except NotImplementedError:  # the local provider: it calls no tools
        return model


def _tool_choice(state: ChatState, configurable: dict[str, Any]) -> str | None:
    """The caller's tool_choice while the model has not answered yet in this run."""
    if len(state["messages"]) > configurable.get("tool_choice_until", 0):
        return None
    return configurable.get("tool_choice")


async def agent_model_node(state: ChatState, config: RunnableConfig) -> dict[str, Any]:
    settings = TurnSettings.of(config)
    configurable = config.get("configurable", {})
    tools = configurable.get("agent_tools") or []
    client_tools = configurable.get("client_tools") or []
    choice = _tool_choice(state, configurable)
    primary = _model_for(state, settings)
    memory = await remember(state, settings, primary)
    prompt = _prompt(_remembered(state, memory), settings)
    try:
        reply = await _with_tools(primary, tools, client_tools, choice).ainvoke(prompt, config)
        used = settings.model
    except Exception as exc:
        fallback = configurable.get("fallback_model")
        if not fallback or provider_failure(exc) is None:
            raise
        logger.warning("model %s failed (%s); answering with %s", settings.model, exc, fallback)
        model = chat_model(fallback, ModelOptions(settings.temperature, settings.max_tokens))
        reply = await _with_tools(model, tools, client_tools, choice).ainvoke(prompt, config)
        used = fallback
    limit = configurable.get("max_tool_iterations") or (
        django_settings.CHATTER_AGENT_MAX_TOOL_ITERATIONS
    )
    if getattr(reply, "tool_calls", None) and _tool_rounds(state) >= limit:
        raise ToolIterationsExceeded(
            f"The agent asked for tools more than {limit} times in one reply "
            "(CHATTER_AGENT_MAX_TOOL_ITERATIONS); the reply was stopped.",
            details={"max_tool_iterations": limit},
        )
    # Which model answered (the fallback's spec when the primary failed): the reply's record.
    reply.response_metadata = {**(reply.response_metadata or {}), "chatter_model": used}
    return _with_reply(memory, reply, settings)


def tool_error_text(exc: Exception) -> str:
    """What the model reads when a tool raised."""
    return f"Error: {type(exc).__name__}: {exc}"


def _runs_in_thread(tool: BaseTool) -> bool:
    if isinstance(tool, StructuredTool):
        return tool.coroutine is None
    return type(tool)._arun is BaseTool._arun


def _invoke_sync(tool: BaseTool, call: dict[str, Any]) -> Any:
    return tool.invoke({**call, "type": "tool_call"})


async def _run_call(
    request: ToolCallRequest,
    execute: Any,
    *,
    db: Any,
    decisions: dict[str, dict[str, Any]],
) -> Any:
    """One tool call, timed; a rejected call is not run and its result says so."""
    call = request.tool_call
    started = time.monotonic()
    decision = decisions.get(call["id"])
    approval = None if decision is None else ("approved" if decision["approved"] else "rejected")
    try:
        if approval == "rejected":
            reason = decision.get("reason") if decision else ""
            result: Any = ToolMessage(
                "The user rejected this tool call" + (f": {reason}" if reason else "."),
                tool_call_id=call["id"],
                name=call["name"],
                status="error",
            )
        elif request.tool is not None and _runs_in_thread(request.tool):
            result = await db(_invoke_sync, request.tool, call)
        else:
            result = await execute(request)
    except GraphBubbleUp:
        raise
    except Exception as exc:  # handed to the model as the tool's result
        result = ToolMessage(
            tool_error_text(exc), tool_call_id=call["id"], name=call["name"], status="error"
        )
    if isinstance(result, ToolMessage):
        result.response_metadata = {
            **(result.response_metadata or {}),
            "latency_ms": int((time.monotonic() - started) * 1000),
            "approval": approval,
        }
    return result


def _decision(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return {"approved": bool(value.get("approved")), "reason": str(value.get("reason") or "")}
    return {"approved": bool(value), "reason": ""}


async def tools_node(state: ChatState, config: RunnableConfig) -> dict[str, Any]:
    configurable = config.get("configurable", {})
    tools = configurable.get("agent_tools") or []
    needs_approval = set(configurable.get("approval_tools") or ())
    calls = getattr(state["messages"][-1], "tool_calls", None) or []
    # Every approval of the step before any tool runs: a resume re-runs this node from the
    # top, and no call may run twice.
    decisions = {
        call["id"]: _decision(
            interrupt({"tool_call_id": call["id"], "name": call["name"], "args": call["args"]})
        )
        for call in calls
        if call["name"] in needs_approval
    }
    node = ToolNode(
        tools,
        handle_tool_errors=tool_error_text,
        awrap_tool_call=functools.partial(
            _run_call, db=configurable.get("db_call", db_call), decisions=decisions
        ),
    )
    return await node.ainvoke(state, config)


def _next(state: ChatState, config: RunnableConfig) -> str:
    calls = getattr(state["messages"][-1], "tool_calls", None)
    if not calls:
        return END
    client = set(config.get("configurable", {}).get("client_tool_names") or ())
    if client and any(call["name"] in client for call in calls):
        return END  # the caller runs its own tools
    return TOOLS_NODE


def build_agent() -> StateGraph:
    builder = StateGraph(ChatState)
    builder.add_node(MODEL_NODE, agent_model_node)
    builder.add_node(TOOLS_NODE, tools_node)
    builder.add_edge(START, MODEL_NODE)
    builder.add_conditional_edges(MODEL_NODE, _next, [TOOLS_NODE, END])
    builder.add_edge(TOOLS_NODE, MODEL_NODE)
    return builder
