"""The `local` provider's chat model: no language model, said plainly (see providers)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from conversations.providers import (
    LOCAL_MODEL_NAME,
    NO_MODEL_TEXT,
    PASSAGES_INTRO,
    count_tokens,
)


class LocalChatModel(BaseChatModel):
    """A real LangChain chat model that composes its reply without a language model: the
    retrieved passages, cited, when the knowledge base has any; else it says plainly that
    no model is configured."""

    sources: list[dict[str, Any]] = []

    @property
    def _llm_type(self) -> str:
        return "chatter-local"

    def _text(self) -> str:
        if not self.sources:
            return NO_MODEL_TEXT
        passages = []
        for source in self.sources:
            excerpt = " ".join(str(source["content"]).split())
            if len(excerpt) > 500:
                excerpt = excerpt[:500].rsplit(" ", 1)[0] + " …"
            where = f", page {source['page']}" if source.get("page") else ""
            passages.append(f"[{source['n']}] {excerpt} ({source['title']}{where})")
        return PASSAGES_INTRO + "\n\n" + "\n\n".join(passages)

    def _reply(self, messages: list[BaseMessage]) -> AIMessage:
        text = self._text()
        prompt_tokens = sum(count_tokens(str(m.content)) for m in messages)
        completion_tokens = count_tokens(text)
        return AIMessage(
            content=text,
            usage_metadata={
                "input_tokens": prompt_tokens,
                "output_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            response_metadata={"model_name": LOCAL_MODEL_NAME},
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        reply = self._reply(messages)
        words = re.findall(r"\S+\s*", str(reply.content))
        for index, word in enumerate(words):
            last = index == len(words) - 1
            chunk = ChatGenerationChunk(
                message=AIMessageChunk(
                    content=word,
                    usage_metadata=reply.usage_metadata if last else None,
                    response_metadata=reply.response_metadata if last else {},
                )
            )
            if run_manager:
                run_manager.on_llm_new_token(word, chunk=chunk)
            yield chunk
