"""The knowledge base's client-facing errors (rendered as the API's error envelope)."""

from __future__ import annotations

from core.errors import ApplicationError


class FileTooLarge(ApplicationError):
    status = 413
    code = "file_too_large"


class UnsupportedFile(ApplicationError):
    """The bytes are not a type we read (binary, unknown, or not what the extension says)."""

    status = 415
    code = "unsupported_file"


class UnreadableFile(ApplicationError):
    """A supported type, but empty, malformed, encrypted or a zip bomb."""

    status = 422
    code = "unreadable_file"


class EmbeddingError(ApplicationError):
    """The embedder is misconfigured or unreachable (e.g. it returns the wrong dimension)."""

    status = 503
    code = "embedding_unavailable"
