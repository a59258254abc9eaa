"""Chat models for benchmarks and tests: no network, exact timing, real LangChain models.

Importing this module (CHATTER_PROVIDER_MODULES=bench.providers) registers:
- `instant:<text>`  replies at once (a zero-latency model);
- `paced:<tokens>:<ms>`  streams <tokens> tokens, one every <ms> milliseconds;
- `instant-tool:<tool>`  a zero-latency tool-calling model: asked a question, it calls
  <tool> once (the calculator's arguments), then, given the tool's result, answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from conversations.providers import ModelOptions, register_provider


class ScriptedChatModel(BaseChatModel):
    tokens: list[str]
    delay_seconds: float = 0.0

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _usage(self, messages: list[BaseMessage]) -> dict[str, int]:
        prompt = sum(len(str(m.content).split()) for m in messages)
        return {
            "input_tokens": prompt,
            "output_tokens": len(self.tokens),
            "total_tokens": prompt + len(self.tokens),
        }

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        if self.delay_seconds:
            time.sleep(self.delay_seconds * len(self.tokens))
        message = AIMessage("".join(self.tokens), usage_metadata=self._usage(messages))  # type: ignore[arg-type]
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: Any = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for index, token in enumerate(self.tokens):
            time.sleep(self.delay_seconds)
            usage = self._usage(messages) if index == len(self.tokens) - 1 else None
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=token, usage_metadata=usage))  # type: ignore[arg-type]
            if run_manager:
                run_manager.on_llm_new_token(token, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: Any = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for index, token in enumerate(self.tokens):
            await asyncio.sleep(self.delay_seconds)
            usage = self._usage(messages) if index == len(self.tokens) - 1 else None
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=token, usage_metadata=usage))  # type: ignore[arg-type]
            if run_manager:
                await run_manager.on_llm_new_token(token, chunk=chunk)
            yield chunk


def _instant(model: str, options: ModelOptions) -> BaseChatModel:
    text = model or "ok"
    return ScriptedChatModel(tokens=[word + " " for word in text.split()] or [text])


def _paced(model: str, options: ModelOptions) -> BaseChatModel:
    count, _, ms = model.partition(":")
    return ScriptedChatModel(
        tokens=[f"t{i} " for i in range(int(count or 50))], delay_seconds=int(ms or 20) / 1000
    )


class ToolCallingChatModel(BaseChatModel):
    tool: str
    args: dict[str, Any] = {"expression": "6 * 7"}

    @property
    def _llm_type(self) -> str:
        return "scripted-tool-calling"

    def bind_tools(self, tools: Any, **kwargs: Any) -> ToolCallingChatModel:
        return self

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        usage = {"input_tokens": len(messages), "output_tokens": 1, "total_tokens": 1}
        if messages and messages[-1].type == "tool":
            message = AIMessage(f"The tool said {messages[-1].content}.", usage_metadata=usage)  # type: ignore[arg-type]
        else:
            call = {"name": self.tool, "args": self.args, "id": f"call-{time.monotonic_ns()}"}
            message = AIMessage("", tool_calls=[call], usage_metadata=usage)  # type: ignore[arg-type]
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        return self._generate(messages, stop, run_manager, **kwargs)


def _instant_tool(model: str, options: ModelOptions) -> BaseChatModel:
    return ToolCallingChatModel(tool=model or "calculator")


register_provider("instant", _instant)
register_provider("instant-tool", _instant_tool)
register_provider("paced", _paced)
