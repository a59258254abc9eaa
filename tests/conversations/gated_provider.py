"""A test chat model for servers the suite starts (CHATTER_PROVIDER_MODULES): `gated:<path>`
streams its first token, then waits until the file <path> exists before the rest. A client
that receives the first token before it creates the file proves the stream is not buffered,
whatever the machine's speed."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk

from bench.providers import ScriptedChatModel
from conversations.providers import ModelOptions, register_provider

GATE_TIMEOUT_SECONDS = 60


class GatedChatModel(ScriptedChatModel):
    gate: str

    async def _astream(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        deadline = time.monotonic() + GATE_TIMEOUT_SECONDS
        for index, token in enumerate(self.tokens):
            if index == 1:
                while not os.path.exists(self.gate):
                    if time.monotonic() > deadline:
                        raise TimeoutError("the gate was never opened")
                    await asyncio.sleep(0.02)
            usage = self._usage(messages) if index == len(self.tokens) - 1 else None
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=token, usage_metadata=usage))  # type: ignore[arg-type]
            if run_manager:
                await run_manager.on_llm_new_token(token, chunk=chunk)
            yield chunk


def _gated(model: str, options: ModelOptions) -> GatedChatModel:
    return GatedChatModel(tokens=[f"g{i} " for i in range(5)], gate=model)


register_provider("gated", _gated)
