"""A reply's confidence, from something measured about it, never a constant.

Two measurements, the first one available wins:

- ``logprobs``: the provider returned the log-probability of each token it generated
  (OpenAI-compatible providers with ``logprobs=true``); confidence is their geometric mean
  probability, exp(mean log p), in [0, 1]. It is how sure the model was of the words it
  chose, averaged per token. A token of probability 0 (log p = -inf) makes it 0; it is not
  dropped, since dropping the least likely tokens would inflate the figure; NaNs are
  dropped, and a log p above 0 (a rounding artefact) counts as 0.
- ``citations``: the reply cites numbered knowledge passages ([1], [2]...); confidence is
  the mean cosine similarity between the question and the passages it cites, clamped to
  [0, 1]. A citation of a passage it was not given counts 0 (a made-up source is no
  support). With none cited, it is the mean similarity of the passages it was given,
  halved, since it answered without using them.

With neither, the confidence is unknown (None) and the method is blank: a made-up number
would be worse than none.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

# [n] as a citation, not an index: "see [2]" is one, "items[2]" and "m[1][2]" are not.
CITATION = re.compile(r"(?<![\w\])])\[(\d{1,3})\]")


def confidence_from_logprobs(logprobs: Sequence[float]) -> float | None:
    values = [min(float(v), 0.0) for v in logprobs if v is not None and not math.isnan(float(v))]
    if not values:
        return None
    if any(v == -math.inf for v in values):
        return 0.0
    return math.exp(sum(values) / len(values))


def confidence_from_citations(reply: str, sources: Sequence[dict[str, Any]]) -> float | None:
    similarities = {
        int(s["n"]): float(s["similarity"])
        for s in sources
        if s.get("similarity") is not None and s.get("n") is not None
    }
    if not similarities:
        return None
    # A passage number the reply cites but was never given scores 0: a made-up source.
    cited = [similarities.get(n, 0.0) for n in {int(m) for m in CITATION.findall(reply)}]
    if cited:
        return max(0.0, min(1.0, sum(cited) / len(cited)))
    return max(0.0, min(1.0, sum(similarities.values()) / len(similarities) / 2))


def reply_confidence(
    *, reply: str, sources: Sequence[dict[str, Any]] = (), logprobs: Sequence[float] | None = None
) -> tuple[float | None, str]:
    """(confidence, method) for a reply; (None, "") when nothing measured it."""
    if logprobs:
        value = confidence_from_logprobs(logprobs)
        if value is not None:
            return value, "logprobs"
    value = confidence_from_citations(reply, sources)
    if value is not None:
        return value, "citations"
    return None, ""


def sources_from_tool_calls(calls: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The passages ``knowledge_search`` calls handed the model, numbered in order (their
    similarities are what a citation-based confidence averages)."""
    sources: list[dict[str, Any]] = []
    for call in calls:
        if call["name"] != "knowledge_search" or call["error"] or not call["result"]:
            continue
        try:
            hits = json.loads(call["result"])
        except ValueError:  # an excerpt cut mid-way
            continue
        for hit in hits if isinstance(hits, list) else []:
            if isinstance(hit, dict):
                sources.append({"n": len(sources) + 1, "similarity": hit.get("similarity")})
    return sources
