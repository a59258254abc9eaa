"""Conversation memory: past a window, the oldest messages become a running summary.

Why and how: docs/architecture.md, "conversations/memory.py".
"""

from __future__ import annotations

import re
from collections import Counter

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from conversations.providers import written_without_model

SUMMARY_INSTRUCTIONS = (
    "You maintain the memory of a conversation. Write a concise summary of the conversation "
    "below, keeping facts, names, numbers, decisions and open questions the assistant will "
    "need later. If a previous summary is given, fold it in. Reply with the summary only."
)

_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'_-]+")
_STOPWORDS = frozenset(
    """
    the a an and or but if then than that this these those is are was were be been
    being to of in on at by for with from as it its into about over under so not no do
    does did have has had i you he she we they me him her us them my your our their
    what which who whom how when where why can could would should will shall may might
    must just also very more most some any all each few other such only own same too
    there here
    """.split()  # noqa: SIM905 (a word list reads best as text)
)


def split_for_summary(
    messages: list[BaseMessage], window: int, *, trigger: int | None = None
) -> tuple[list[BaseMessage], int]:
    """The oldest messages to fold into the summary, and how many stay verbatim.

    Nothing happens until the context holds more than `trigger` (default: `window`)
    messages; then it is cut back to half the window, so summaries run once every few
    turns, not on every turn.
    """
    if window < 2 or len(messages) <= (trigger or window):
        return [], len(messages)
    keep = max(2, window // 2)
    return messages[:-keep], keep


def _role(message: BaseMessage) -> str:
    return {"human": "user", "ai": "assistant"}.get(message.type, message.type)


def transcript(messages: list[BaseMessage]) -> str:
    # Replies no model wrote (the `local` provider's) are not the assistant's words.
    return "\n".join(
        f"{_role(m)}: {m.content}"
        for m in messages
        if str(m.content).strip() and not written_without_model(m)
    )


def summary_request(previous: str, messages: list[BaseMessage]) -> list[BaseMessage]:
    """The prompt a language model summarizes from."""
    body = transcript(messages)
    if previous:
        body = f"Previous summary:\n{previous}\n\nConversation since:\n{body}"
    return [SystemMessage(SUMMARY_INSTRUCTIONS), HumanMessage(body)]


def extractive_summary(previous: str, messages: list[BaseMessage], max_chars: int = 1500) -> str:
    """Pick the sentences that carry the most frequent content words (Luhn's method),
    in their original order, within `max_chars`. The previous summary competes too."""
    candidates: list[str] = []
    seen: set[str] = set()  # a sentence said twice (a repeated reply) is kept once

    def add(text: str, sentence: str) -> None:
        if sentence.lower() not in seen:
            seen.add(sentence.lower())
            candidates.append(text)

    if previous:
        for sentence in _SENTENCE.findall(previous):
            if sentence.strip():
                add(sentence.strip(), sentence.strip().split(": ", 1)[-1])
    for message in messages:
        if written_without_model(message):
            continue  # not the assistant's words: kept out of the memory a model reads
        for sentence in _SENTENCE.findall(str(message.content)):
            if sentence.strip():
                add(f"{_role(message)}: {sentence.strip()}", sentence.strip())
    if not candidates:
        return previous

    def words(text: str) -> list[str]:
        return [w.lower() for w in _WORD.findall(text) if w.lower() not in _STOPWORDS]

    frequency = Counter(w for sentence in candidates for w in words(sentence))

    def score(sentence: str) -> float:
        sentence_words = words(sentence)
        if not sentence_words:
            return 0.0
        return sum(frequency[w] for w in sentence_words) / len(sentence_words) ** 0.5

    ranked = sorted(range(len(candidates)), key=lambda i: score(candidates[i]), reverse=True)
    chosen: list[int] = []
    length = 0
    for index in ranked:
        if length + len(candidates[index]) + 1 > max_chars:
            continue
        chosen.append(index)
        length += len(candidates[index]) + 1
    return " ".join(candidates[i] for i in sorted(chosen))
