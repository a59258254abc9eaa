"""Chat completions answered by an agent: its settings and variant as in a conversation
turn, the agent workflow's tool loop (conversations.agent_graph, compiled without a
checkpointer: a completion is stateless, its history is the request's messages), and one
agent interaction recorded per completion.

The agent's own tools run inside the loop and stay there: neither their calls nor the
model's words before them reach the client. A call of one of the client's tools ends the
run; it is answered in OpenAI's format (``finish_reason: "tool_calls"``), and the client
sends its result back in the next request's messages.
"""

from __future__ import annotations

import functools
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async

from accounts.models import User
from agents.confidence import sources_from_tool_calls
from agents.models import AgentInteraction
from agents.runtime import AgentSettings, agent_settings
from agents.services import TOOL_RESULT_EXCERPT_CHARS, interaction_record, variant_choose
from conversations.providers import default_model_spec, provider_failure
from core.asyncdb import release_connections
from core.errors import ApplicationError
from openai_api.errors import InvalidRequest, application_error_body, error_body
from openai_api.parsing import ChatRequest
from openai_api.selectors import model_get

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage
    from langchain_core.tools import BaseTool
    from langgraph.graph.state import CompiledStateGraph

logger = logging.getLogger(__name__)


async def _db(func: Any, *args: Any, **kwargs: Any) -> Any:
    """A database call from the completion's code (the stream outlives the request's sync
    thread, so any worker thread), its connection given back at once."""

    def call() -> Any:
        try:
            return func(*args, **kwargs)
        finally:
            release_connections()

    return await sync_to_async(call, thread_sensitive=False)()


@functools.cache
def _graph() -> CompiledStateGraph:
    # The conversations' agent workflow, without a checkpointer: nothing to resume, branch
    # or remember between requests.
    from conversations.agent_graph import build_agent

    return build_agent().compile()


@dataclass
class Completion:
    """One chat completion about to run: who asks, what, and the agent's settings."""

    request: ChatRequest
    user: User
    settings: AgentSettings
    tools: list[BaseTool]  # the agent's tools offered to the model (approval ones are not)
    id: uuid.UUID = field(default_factory=uuid.uuid4)  # its interaction's id too
    created: int = field(default_factory=lambda: int(time.time()))
    started: float = field(default_factory=time.monotonic)

    @property
    def name(self) -> str:
        return f"chatcmpl-{self.id.hex}"

    @property
    def model(self) -> str:
        return self.settings.agent.slug

    def config(self) -> dict[str, Any]:
        settings, request = self.settings, self.request
        system = "\n\n".join(p for p in (settings.system_prompt.strip(), request.system) if p)
        return {
            "configurable": {
                "model": settings.model,
                # The client's values, where it gives them, over the agent's (and its variant's).
                "temperature": request.temperature
                if request.temperature is not None
                else settings.temperature,
                "max_tokens": request.max_tokens or settings.max_tokens,
                "system_prompt": system,
                "memory_window": 0,  # the client sends the history it wants answered
                "reply_id": self.name,
                "user_id": self.user.pk,
                "fallback_model": settings.fallback_model,
                "agent_tools": self.tools,
                "approval_tools": [],
                "client_tools": request.tools,
                "client_tool_names": request.tool_names,
                "tool_choice": request.tool_choice,
                "tool_choice_until": len(request.messages),
                "db_call": _db,
            }
        }

    def input(self) -> dict[str, Any]:
        return {"messages": [message.model_copy() for message in self.request.messages]}


def completion_prepare(
    *, user: User, request: ChatRequest, started: float | None = None
) -> Completion:
    """The agent ``request.model`` names (404 model_not_found if ``user`` may not use it),
    its variant chosen for this completion (Thompson sampling, recorded), its settings and
    tools built for ``user``. A client tool may not take the name of one of the agent's."""
    agent = model_get(user=user, model=request.model)
    own = set(agent.tools)
    for index, name in enumerate(request.tool_names):
        if name in own:
            raise InvalidRequest(
                f"The agent {agent.slug!r} has a tool of its own named {name!r}; name yours "
                "differently.",
                param=f"tools[{index}].function.name",
            )
    choice = variant_choose(agent=agent, user=user)
    settings = agent_settings(
        agent=agent, user=user, choice=choice, default_model=default_model_spec()
    )
    # A call that needs a person's approval cannot pause a stateless completion: such tools
    # are not offered here (a conversation bound to the agent has them).
    tools = [tool for tool in settings.tools if tool.name not in settings.approval_tools]
    completion = Completion(request=request, user=user, settings=settings, tools=tools)
    if started is not None:  # when the request arrived: the interaction's latency counts from it
        completion.started = started
    return completion


# --- what a run produced ---------------------------------------------------------------------
@dataclass
class Outcome:
    """A finished run: its model messages in order (the reply last) and tool results."""

    completion: Completion
    steps: list[BaseMessage]
    results: dict[str, BaseMessage]

    @property
    def reply(self) -> BaseMessage:
        return self.steps[-1]

    @property
    def client_calls(self) -> list[dict[str, Any]]:
        names = set(self.completion.request.tool_names)
        return [c for c in getattr(self.reply, "tool_calls", None) or [] if c["name"] in names]

    @property
    def finish_reason(self) -> str:
        if self.client_calls:
            return "tool_calls"
        metadata = getattr(self.reply, "response_metadata", None) or {}
        reason = metadata.get("finish_reason") or metadata.get("stop_reason")
        return "length" if reason in ("length", "max_tokens") else "stop"

    @property
    def usage(self) -> dict[str, int]:
        """Summed over every model call of the run: the agent's tool steps cost tokens too."""
        usage = [getattr(step, "usage_metadata", None) or {} for step in self.steps]
        prompt = sum(int(u.get("input_tokens", 0)) for u in usage)
        completion = sum(int(u.get("output_tokens", 0)) for u in usage)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    @property
    def model_used(self) -> str:
        metadata = getattr(self.reply, "response_metadata", None) or {}
        return metadata.get("chatter_model") or self.completion.settings.model

    def tool_trace(self) -> list[dict[str, Any]]:
        """The run's tool calls in call order, as interactions store them; the client's
        (answered by the client, not here) marked ``client``."""
        client = set(self.completion.request.tool_names)
        trace = []
        for step in self.steps:
            for call in getattr(step, "tool_calls", None) or []:
                entry: dict[str, Any] = {
                    "id": call["id"],
                    "name": call["name"],
                    "args": call["args"],
                    "result": "",
                    "latency_ms": None,
                    "error": "",
                    "approval": None,
                }
                if call["name"] in client:
                    entry["client"] = True
                result = self.results.get(str(call["id"]))
                if result is not None:
                    text = str(result.content)[:TOOL_RESULT_EXCERPT_CHARS]
                    failed = getattr(result, "status", "success") == "error"
                    entry.update(
                        result=text,
                        latency_ms=(result.response_metadata or {}).get("latency_ms"),
                        error=text if failed else "",
                    )
                trace.append(entry)
        return trace

    def sources(self) -> list[dict[str, Any]]:
        """The passages knowledge_search handed the model, numbered (for the confidence)."""
        return sources_from_tool_calls(self.tool_trace())

    def logprobs(self) -> list[float] | None:
        metadata = getattr(self.reply, "response_metadata", None) or {}
        content = (metadata.get("logprobs") or {}).get("content") or []
        values = [float(token["logprob"]) for token in content if "logprob" in token]
        return values or None


def _latency_ms(completion: Completion) -> int:
    return int((time.monotonic() - completion.started) * 1000)


def completion_record(outcome: Outcome) -> AgentInteraction:
    """The completion as one of its agent's interactions (source ``openai``)."""
    completion = outcome.completion
    usage = outcome.usage
    return interaction_record(
        agent=completion.settings.agent,
        source=AgentInteraction.Source.OPENAI,
        user=completion.user,
        choice=completion.settings.choice,
        model_used=outcome.model_used,
        latency_ms=_latency_ms(completion),
        tokens_in=usage["prompt_tokens"],
        tokens_out=usage["completion_tokens"],
        tool_calls=outcome.tool_trace(),
        reply=outcome.reply.text,
        sources=outcome.sources() or None,
        logprobs=outcome.logprobs(),
        interaction_id=completion.id,
    )


def completion_failure_record(
    completion: Completion, exc: Exception, steps: list[BaseMessage], results: dict[str, Any]
) -> ApplicationError | None:
    """A run that ended without a reply, as an interaction with its error (the agent's
    error rate counts it). Returns what the client is told; None for a bug (a 500)."""
    failure = exc if isinstance(exc, ApplicationError) else provider_failure(exc)
    text = failure.message if failure else f"Internal error: {type(exc).__name__}"
    outcome = Outcome(completion, steps, results)
    usage = outcome.usage
    interaction_record(
        agent=completion.settings.agent,
        source=AgentInteraction.Source.OPENAI,
        user=completion.user,
        choice=completion.settings.choice,
        model_used=completion.settings.model,
        latency_ms=_latency_ms(completion),
        tokens_in=usage["prompt_tokens"],
        tokens_out=usage["completion_tokens"],
        tool_calls=outcome.tool_trace() if steps else [],
        error=text,
        interaction_id=completion.id,
    )
    return failure


# --- the response, whole -----------------------------------------------------------------------
def _tool_call_json(call: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": call["id"],
        "type": "function",
        "function": {"name": call["name"], "arguments": json.dumps(call["args"])},
    }


def completion_body(outcome: Outcome) -> dict[str, Any]:
    """The ``chat.completion`` object."""
    completion = outcome.completion
    calls = outcome.client_calls
    message: dict[str, Any] = {
        "role": "assistant",
        "content": outcome.reply.text or (None if calls else ""),
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = [_tool_call_json(call) for call in calls]
    return {
        "id": completion.name,
        "object": "chat.completion",
        "created": completion.created,
        "model": completion.model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": outcome.finish_reason,
            }
        ],
        "usage": outcome.usage,
    }


def _messages_of(state: dict[str, Any], skip: int) -> tuple[list[Any], dict[str, Any]]:
    produced = state.get("messages", [])[skip:]
    steps = [m for m in produced if m.type == "ai"]
    results = {str(m.tool_call_id): m for m in produced if m.type == "tool"}
    return steps, results


async def completion_create(completion: Completion) -> dict[str, Any]:
    """Run the completion to its end: the ``chat.completion`` object, its interaction
    recorded. A failure is recorded too, then raised (ApplicationError: 4xx/5xx for the
    client; anything else is a bug, a 500)."""
    try:
        state = await _graph().ainvoke(completion.input(), completion.config())
    except Exception as exc:
        failure = await _db(completion_failure_record, completion, exc, [], {})
        if failure is None:
            raise
        raise failure from exc
    steps, results = _messages_of(state, len(completion.request.messages))
    outcome = Outcome(completion, steps, results)
    await _db(completion_record, outcome)
    return completion_body(outcome)


# --- the response, streamed --------------------------------------------------------------------
def _chunk(
    completion: Completion,
    delta: dict[str, Any] | None,
    finish_reason: str | None = None,
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": completion.name,
        "object": "chat.completion.chunk",
        "created": completion.created,
        "model": completion.model,
        "system_fingerprint": None,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if completion.request.include_usage:
        chunk["usage"] = None  # OpenAI's way: every chunk says it, the last one holds it
    return chunk


async def completion_chunks(completion: Completion) -> AsyncIterator[dict[str, Any]]:
    """The completion as ``chat.completion.chunk`` objects, in order: the role, the reply's
    text as the model writes it, the client's tool calls, the finish reason, the usage
    (``stream_options.include_usage``). A failure mid-way ends it with ``{"error": ...}``.

    The model's words in a step that calls the agent's own tools are not the reply: when
    the agent has tools, each step's text is held until the step ends and sent only if the
    step answers (without tools, the text goes out as it comes)."""
    from langchain_core.messages import AIMessageChunk

    from conversations.agent_graph import TOOLS_NODE
    from conversations.graph import MODEL_NODE

    client = set(completion.request.tool_names)
    live = not completion.tools
    held: list[str] = []  # this step's text, not sent yet
    sent = False  # whether any of this step's text went out as it came
    steps: list[Any] = []
    results: dict[str, Any] = {}
    yield _chunk(completion, {"role": "assistant", "content": ""})
    try:
        async for mode, payload in _graph().astream(
            completion.input(), completion.config(), stream_mode=["messages", "updates"]
        ):
            if mode == "messages":
                chunk, meta = payload
                # Chunks of a model that streams; one that does not is read from its step.
                if meta.get("langgraph_node") != MODEL_NODE or not isinstance(
                    chunk, AIMessageChunk
                ):
                    continue
                text = chunk.text
                if not text:
                    continue
                if live:
                    sent = True
                    yield _chunk(completion, {"content": text})
                else:
                    held.append(text)
                continue
            for node, update in (payload or {}).items():
                messages = (update.get("messages") or []) if isinstance(update, dict) else []
                if node == TOOLS_NODE:
                    results.update({str(m.tool_call_id): m for m in messages if m.type == "tool"})
                    continue
                step = next((m for m in reversed(messages) if m.type == "ai"), None)
                if node != MODEL_NODE or step is None:
                    continue
                steps.append(step)
                calls = getattr(step, "tool_calls", None) or []
                if calls and not any(call["name"] in client for call in calls):
                    held.clear()  # a step of the agent's own tools: not the reply
                    sent = False
                    continue
                if not held and not sent and step.text:
                    held.append(step.text)  # the model did not stream: its text at once
                for text in held:
                    yield _chunk(completion, {"content": text})
                held.clear()
    except Exception as exc:
        failure = await _db(completion_failure_record, completion, exc, steps, results)
        if failure is None:
            logger.error("completion %s failed", completion.name, exc_info=exc)
            yield {"error": error_body(500, "Internal server error.", code="internal_error")}
        else:
            yield {"error": application_error_body(failure)}
        return
    if not steps:  # a graph that ends without a model message is a bug
        logger.error("completion %s ended without a reply", completion.name)
        yield {"error": error_body(500, "Internal server error.", code="internal_error")}
        return
    outcome = Outcome(completion, steps, results)
    for index, call in enumerate(outcome.client_calls):
        yield _chunk(completion, {"tool_calls": [{"index": index, **_tool_call_json(call)}]})
    await _db(completion_record, outcome)
    yield _chunk(completion, {}, outcome.finish_reason)
    if completion.request.include_usage:
        yield {**_chunk(completion, None), "usage": outcome.usage}
