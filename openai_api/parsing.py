"""A chat completion request, checked against OpenAI's contract and turned into LangChain
messages: every refusal is a 400 naming the ``param`` at fault, as OpenAI words it.

Parameters Chatter does not act on (``top_p``, ``stop``, ``seed``, ``user``, ``metadata``,
``parallel_tool_calls``, ...) are accepted and ignored, as SDKs send some of them by
default; those whose absence would change the answer's shape (``n`` > 1, a JSON
``response_format``, the legacy ``functions``) are refused.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from openai_api.errors import InvalidRequest

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

ROLES = ("system", "developer", "user", "assistant", "tool")
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_TOOLS = 128
MAX_TOKENS = 200_000
TOOL_CHOICES = ("none", "auto", "required")


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: list[BaseMessage]
    # The leading system (or developer) messages' text: it follows the agent's own prompt.
    system: str = ""
    temperature: float | None = None
    max_tokens: int | None = None
    stream: bool = False
    include_usage: bool = False
    tools: list[dict[str, Any]] = field(default_factory=list)  # OpenAI function tools
    tool_choice: str | None = None  # none, auto, any (required) or a tool's name

    @property
    def tool_names(self) -> list[str]:
        return [tool["function"]["name"] for tool in self.tools]


def _invalid(param: str | None, message: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _kind(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _expect(value: Any, types: type | tuple[type, ...], param: str, what: str) -> Any:
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise _invalid(param, f"Invalid type for '{param}': expected {what}, got a boolean.")
    if not isinstance(value, types):
        raise _invalid(
            param,
            f"Invalid type for '{param}': expected {what}, got {_kind(value)}.",
            "invalid_type",
        )
    return value


def _text(content: Any, param: str, *, allow_null: bool = False, parts: tuple[str, ...]) -> str:
    """A message's content: a string, or an array of text parts (joined)."""
    if content is None:
        if allow_null:
            return ""
        raise _invalid(
            param, f"Missing required parameter: '{param}'.", "missing_required_parameter"
        )
    if isinstance(content, str):
        return content
    _expect(content, list, param, "a string or an array of content parts")
    texts = []
    for index, part in enumerate(content):
        where = f"{param}[{index}]"
        _expect(part, dict, where, "an object")
        kind = part.get("type")
        if kind not in parts:
            raise _invalid(
                f"{where}.type",
                f"Invalid value: {kind!r}. Chatter's agents take content parts of type "
                + " or ".join(repr(p) for p in parts)
                + ".",
            )
        texts.append(_expect(part.get(kind), str, f"{where}.{kind}", "a string"))
    return "\n".join(texts)


def _tool_calls(value: Any, param: str) -> list[dict[str, Any]]:
    _expect(value, list, param, "an array")
    calls = []
    for index, call in enumerate(value):
        where = f"{param}[{index}]"
        _expect(call, dict, where, "an object")
        call_id = _expect(call.get("id"), str, f"{where}.id", "a string")
        if call.get("type", "function") != "function":
            raise _invalid(f"{where}.type", "Invalid value: only 'function' tool calls exist.")
        function = _expect(call.get("function"), dict, f"{where}.function", "an object")
        name = _expect(function.get("name"), str, f"{where}.function.name", "a string")
        arguments = _expect(
            function.get("arguments", "{}"), str, f"{where}.function.arguments", "a string"
        )
        try:
            args = json.loads(arguments or "{}")
        except ValueError:
            args = None
        if not isinstance(args, dict):
            raise _invalid(
                f"{where}.function.arguments", "The arguments must be a JSON object, as text."
            )
        calls.append({"id": call_id, "name": name, "args": args, "type": "tool_call"})
    return calls


def _messages(value: Any) -> tuple[str, list[BaseMessage]]:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    if value is None:
        raise _invalid(
            "messages", "Missing required parameter: 'messages'.", "missing_required_parameter"
        )
    _expect(value, list, "messages", "an array")
    if not value:
        raise _invalid("messages", "'messages' must hold at least one message.", "empty_array")
    system: list[str] = []
    messages: list[BaseMessage] = []
    unanswered: dict[str, int] = {}  # tool call id -> the assistant message that made it
    for index, raw in enumerate(value):
        where = f"messages[{index}]"
        _expect(raw, dict, where, "an object")
        role = raw.get("role")
        if role not in ROLES:
            raise _invalid(
                f"{where}.role",
                f"Invalid value: {role!r}. Supported values are: "
                + ", ".join(f"'{r}'" for r in ROLES)
                + ".",
            )
        content = raw.get("content")
        name = raw.get("name")
        if name is not None:
            _expect(name, str, f"{where}.name", "a string")
        if role != "tool" and unanswered:
            first = next(iter(unanswered))
            raise _invalid(
                f"messages[{unanswered[first]}].tool_calls",
                "An assistant message with 'tool_calls' must be followed by tool messages "
                f"responding to each 'tool_call_id'; {first!r} has no answer.",
            )
        if role in ("system", "developer"):
            text = _text(content, f"{where}.content", parts=("text",))
            if not messages:  # leading: joins the agent's prompt
                system.append(text)
            else:
                messages.append(SystemMessage(text))
        elif role == "user":
            text = _text(content, f"{where}.content", parts=("text",))
            messages.append(HumanMessage(text, **({"name": name} if name else {})))
        elif role == "assistant":
            calls = (
                _tool_calls(raw["tool_calls"], f"{where}.tool_calls")
                if raw.get("tool_calls") is not None
                else []
            )
            text = _text(
                content, f"{where}.content", allow_null=bool(calls), parts=("text", "refusal")
            )
            messages.append(AIMessage(text, tool_calls=calls, **({"name": name} if name else {})))
            unanswered = {call["id"]: index for call in calls}
        else:
            call_id = _expect(raw.get("tool_call_id"), str, f"{where}.tool_call_id", "a string")
            if call_id not in unanswered:
                raise _invalid(
                    f"{where}.tool_call_id",
                    f"Invalid value: {call_id!r}. A tool message answers a tool call of the "
                    "assistant message just before it.",
                )
            del unanswered[call_id]
            text = _text(content, f"{where}.content", parts=("text",))
            messages.append(ToolMessage(text, tool_call_id=call_id))
    if unanswered:
        first = next(iter(unanswered))
        raise _invalid(
            f"messages[{unanswered[first]}].tool_calls",
            "An assistant message with 'tool_calls' must be followed by tool messages "
            f"responding to each 'tool_call_id'; {first!r} has no answer.",
        )
    if not messages:
        raise _invalid("messages", "'messages' holds only system messages: add a user message.")
    return "\n\n".join(t for t in system if t.strip()), messages


def _number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    _expect(value, (int, float), name, "a number")
    if not low <= value <= high:
        raise _invalid(
            name,
            f"Invalid '{name}': {value} is out of range; expected a value from {low:g} to {high:g}.",
            "decimal_out_of_range" if isinstance(value, float) else "integer_out_of_range",
        )
    return float(value)


def _max_tokens(body: dict[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        _expect(value, int, name, "an integer")
        if not 1 <= value <= MAX_TOKENS:
            raise _invalid(
                name,
                f"Invalid '{name}': {value} is out of range; expected 1 to {MAX_TOKENS}.",
                "integer_out_of_range",
            )
        return int(value)
    return None


def _tools(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    _expect(value, list, "tools", "an array")
    if len(value) > MAX_TOOLS:
        raise _invalid("tools", f"At most {MAX_TOOLS} tools.", "array_above_max_length")
    tools, names = [], set()
    for index, tool in enumerate(value):
        where = f"tools[{index}]"
        _expect(tool, dict, where, "an object")
        if tool.get("type") != "function":
            raise _invalid(f"{where}.type", "Invalid value: tools are of type 'function'.")
        function = _expect(tool.get("function"), dict, f"{where}.function", "an object")
        name = _expect(function.get("name"), str, f"{where}.function.name", "a string")
        if not TOOL_NAME.match(name):
            raise _invalid(
                f"{where}.function.name",
                f"Invalid '{where}.function.name': letters, digits, _ and -, 1 to 64 of them.",
            )
        if name in names:
            raise _invalid(f"{where}.function.name", f"A second tool named {name!r}.")
        names.add(name)
        definition: dict[str, Any] = {"name": name}
        if function.get("description") is not None:
            definition["description"] = _expect(
                function["description"], str, f"{where}.function.description", "a string"
            )
        parameters = function.get("parameters")
        if parameters is not None:
            definition["parameters"] = _expect(
                parameters, dict, f"{where}.function.parameters", "an object (a JSON Schema)"
            )
        if function.get("strict") is not None:
            definition["strict"] = _expect(
                function["strict"], bool, f"{where}.function.strict", "a boolean"
            )
        tools.append({"type": "function", "function": definition})
    return tools


def _tool_choice(value: Any, tools: list[dict[str, Any]]) -> str | None:
    if value is None:
        return None
    names = [tool["function"]["name"] for tool in tools]
    if isinstance(value, str):
        if value not in TOOL_CHOICES:
            raise _invalid(
                "tool_choice",
                f"Invalid value: {value!r}. Supported values are: 'none', 'auto', 'required', "
                "or an object naming one of the tools.",
            )
        return "any" if value == "required" else value  # LangChain's word for "required"
    _expect(value, dict, "tool_choice", "a string or an object")
    function = value.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if value.get("type") != "function" or not isinstance(name, str):
        raise _invalid(
            "tool_choice", "A tool_choice object is {type: 'function', function: {name}}."
        )
    if name not in names:
        raise _invalid(
            "tool_choice", f"Invalid value: {name!r} is not one of the tools in 'tools'."
        )
    return name


def chat_request_parse(raw: bytes) -> ChatRequest:
    """A chat completion request from its JSON body; InvalidRequest (400) naming the param."""
    try:
        body = json.loads(raw or b"")
    except ValueError as exc:
        raise _invalid(None, "We could not parse the JSON body of your request.") from exc
    if not isinstance(body, dict):
        raise _invalid(None, "The request body must be a JSON object.")
    model = body.get("model")
    if model is None:
        raise _invalid(
            "model", "Missing required parameter: 'model'.", "missing_required_parameter"
        )
    _expect(model, str, "model", "a string")
    if not model.strip():
        raise _invalid("model", "'model' names an agent by its slug; it is empty.")
    system, messages = _messages(body.get("messages"))
    temperature = _number(body, "temperature", 0, 2)
    max_tokens = _max_tokens(body)
    stream = body.get("stream")
    if stream is not None:
        _expect(stream, bool, "stream", "a boolean")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        _expect(options, dict, "stream_options", "an object")
        if not stream:
            raise _invalid(
                "stream_options",
                "The 'stream_options' parameter is only allowed when 'stream' is true.",
            )
        usage = options.get("include_usage")
        if usage is not None:
            include_usage = _expect(usage, bool, "stream_options.include_usage", "a boolean")
    n = body.get("n")
    if n is not None:
        _expect(n, int, "n", "an integer")
        if n != 1:
            raise _invalid("n", "Chatter answers with one choice per request: 'n' must be 1.")
    response_format = body.get("response_format")
    if response_format is not None and (
        not isinstance(response_format, dict) or response_format.get("type") != "text"
    ):
        raise _invalid(
            "response_format", "Only the 'text' response format is supported by Chatter's agents."
        )
    for legacy in ("functions", "function_call"):
        if body.get(legacy) is not None:
            raise _invalid(legacy, f"'{legacy}' is deprecated: use 'tools' and 'tool_choice'.")
    tools = _tools(body.get("tools"))
    return ChatRequest(
        model=model,
        messages=messages,
        system=system,
        temperature=temperature,
        max_tokens=max_tokens,
        stream=bool(stream),
        include_usage=include_usage,
        tools=tools,
        tool_choice=_tool_choice(body.get("tool_choice"), tools),
    )
