"""How the core reaches plugins' contributions: each extension point wraps a plugin's
function so that it is called through ``plugin_call`` with a context bound to its grants.

- tools: a LangChain ``StructuredTool`` in the agents' registry; a failure is the tool's
  error result, which the model sees (the reply goes on).
- workflows: a one-node LangGraph graph in the conversations' registry; the plugin's
  ``reply`` answers the turn (a failure fails the turn like a provider's would).
- job handlers: in the jobs registry; a failure is the attempt's (retried, counted).
- event subscribers: one subscriber of the kernel's event registry hands each committed
  event to the enabled plugins granted ``events.read``, each call in its own savepoint.
- middleware, routes, health checks: called by the plugins app's middleware and views.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from django.conf import settings
from django.db import transaction

from plugins.context import PluginFailed, PluginRequest
from plugins.runtime import (
    HandlerContribution,
    LoadedPlugin,
    ToolContribution,
    WorkflowContribution,
    loaded_plugins,
    plugin_call,
    plugins_sync_quietly,
)

logger = logging.getLogger("chatter.plugins")


# --- tools ----------------------------------------------------------------------------------
def _tool_result(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def tool_spec_for(loaded: LoadedPlugin, contribution: ToolContribution) -> Any:
    from langchain_core.tools import StructuredTool, ToolException

    from agents.tools.registry import ToolContext, ToolSpec

    def factory(tool_context: ToolContext) -> Any:
        def run(**args: Any) -> str:
            ctx = loaded.context(user=tool_context.user)
            try:
                value = plugin_call(
                    loaded,
                    f"tool:{contribution.name}",
                    contribution.func,
                    ctx,
                    threaded=True,
                    budget=settings.CHATTER_PLUGIN_TOOL_BUDGET,
                    **args,
                )
            except PluginFailed as exc:
                raise ToolException(exc.message) from exc
            return _tool_result(value)

        return StructuredTool.from_function(
            func=run,
            name=contribution.name,
            description=contribution.description,
            args_schema=contribution.args_schema,
            handle_tool_error=True,
        )

    return ToolSpec(
        name=contribution.name,
        description=contribution.description,
        factory=factory,
        requires_approval=contribution.requires_approval,
        source=f"plugin:{loaded.name}",
    )


# --- workflows ------------------------------------------------------------------------------
def _plain(messages: list[Any]) -> list[dict[str, str]]:
    roles = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}
    return [{"role": roles.get(m.type, m.type), "content": str(m.content)} for m in messages]


def workflow_spec_for(loaded: LoadedPlugin, contribution: WorkflowContribution) -> Any:
    from conversations.workflows import WorkflowSpec

    def build() -> Any:
        from langchain_core.messages import AIMessage
        from langgraph.graph import END, START, StateGraph

        from conversations.graph import MODEL_NODE, ChatState, TurnSettings

        # Unannotated: LangGraph reads a `config` parameter's annotation, and this module's
        # are strings (from __future__).
        async def node(state, config):  # type: ignore[no-untyped-def]
            turn = TurnSettings.of(config)
            messages = _plain(state.get("messages", []))
            settings_view = {"model": turn.model, "system_prompt": turn.system_prompt}
            ctx = loaded.context()
            loop = asyncio.get_running_loop()
            text = await loop.run_in_executor(
                None,
                lambda: plugin_call(
                    loaded,
                    f"workflow:{contribution.name}",
                    contribution.reply,
                    ctx,
                    messages,
                    settings_view,
                    threaded=True,
                    budget=settings.CHATTER_PLUGIN_WORKFLOW_BUDGET,
                ),
            )
            reply = AIMessage(
                str(text),
                id=turn.reply_id,
                response_metadata={"model_name": f"plugin:{loaded.name}"},
            )
            return {"messages": [reply]}

        builder = StateGraph(ChatState)
        # Named like the built-in model node: the turn's driver records its reply the same way.
        builder.add_node(MODEL_NODE, node)
        builder.add_edge(START, MODEL_NODE)
        builder.add_edge(MODEL_NODE, END)
        return builder

    return WorkflowSpec(
        name=contribution.name,
        description=contribution.description,
        build=build,
        source=f"plugin:{loaded.name}",
        revision=f"{loaded.id}:{loaded.revision}",
    )


# --- job handlers ---------------------------------------------------------------------------
def handler_spec_for(loaded: LoadedPlugin, contribution: HandlerContribution) -> Any:
    from jobs.registry import PermanentJobError

    def handle(job: Any, **args: Any) -> Any:
        try:
            # In the worker's thread: the job's own timeout (its alarm) bounds it.
            return plugin_call(
                loaded,
                f"handler:{contribution.name}",
                contribution.func,
                loaded.context(),
                job,
                budget=float(job.timeout_seconds),
                **args,
            )
        except PluginFailed as exc:
            if isinstance(exc.__cause__, PermanentJobError):
                raise exc.__cause__ from None
            raise RuntimeError(exc.message) from exc

    handle.chatter_plugin = loaded.name  # type: ignore[attr-defined]
    handle.__doc__ = contribution.description
    return handle


# --- event subscribers ----------------------------------------------------------------------
def _event_payload(event: Any) -> dict[str, Any]:
    return {**event.as_payload(), "owner_id": event.owner_id}


def _in_savepoint(func: Any, *args: Any) -> Any:
    # The savepoint holds the plugin's writes only: its failure is recorded outside it.
    with transaction.atomic():
        return func(*args)


def events_handle(events: list[Any]) -> None:
    """The kernel's subscriber: each event to each enabled plugin subscribed to its type and
    granted ``events.read``. Inside the dispatcher's transaction, each call in a savepoint:
    a failing plugin leaves nothing behind and holds no event back (it is counted)."""
    plugins_sync_quietly()
    for loaded in loaded_plugins():
        if not loaded.subscribers or not loaded.context().has_permission("events.read"):
            continue
        for subscriber in loaded.subscribers:
            for event in events:
                if subscriber.events and event.type not in subscriber.events:
                    continue
                try:
                    plugin_call(
                        loaded,
                        "subscriber",
                        _in_savepoint,
                        subscriber.func,
                        loaded.context(),
                        _event_payload(event),
                        budget=settings.CHATTER_PLUGIN_SUBSCRIBER_BUDGET,
                    )
                except PluginFailed:
                    continue  # recorded; the next event, and the other subscribers, go on


# --- requests -------------------------------------------------------------------------------
def request_view(request: Any, *, body: Any = None, subpath: str = "") -> PluginRequest:
    from plugins.context import HIDDEN_HEADERS

    user = getattr(request, "user", None)
    authenticated = bool(user is not None and user.is_authenticated)
    return PluginRequest(
        method=request.method,
        path=request.path,
        query={key: request.GET.get(key, "") for key in request.GET},
        headers={
            key.lower(): value
            for key, value in request.headers.items()
            if key.lower() not in HIDDEN_HEADERS
        },
        user_id=user.pk if authenticated else None,
        user_is_staff=bool(authenticated and user.is_staff),
        body=body,
        subpath=subpath,
    )
