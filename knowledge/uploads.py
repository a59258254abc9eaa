"""Upload file names as the client sent them.

Why and how: docs/architecture.md, "knowledge/uploads.py".
"""

from __future__ import annotations

from typing import Any

from django.core.files.uploadhandler import FileUploadHandler
from django.http.multipartparser import MultiPartParser
from django.utils.encoding import force_str


class ClientNameMultiPartParser(MultiPartParser):
    _client_name: str | None = None

    def sanitize_file_name(self, file_name: str) -> str | None:
        self._client_name = file_name
        return super().sanitize_file_name(file_name)

    def handle_file_complete(self, old_field_name: str, counters: list[int]) -> None:
        # Called before the next part's name is read, so _client_name is still this file's.
        super().handle_file_complete(old_field_name, counters)
        files = self._files.getlist(force_str(old_field_name, self._encoding, errors="replace"))
        if files and not hasattr(files[-1], "client_name"):
            files[-1].client_name = self._client_name


class ClientFileNameHandler(FileUploadHandler):
    """Parses the body itself (``handle_raw_input``), handing the data to the others."""

    def handle_raw_input(
        self,
        input_data: Any,
        META: dict[str, Any],
        content_length: int,
        boundary: bytes,
        encoding: str | None = None,
    ) -> tuple[Any, Any]:
        others = [handler for handler in self.request.upload_handlers if handler is not self]
        return ClientNameMultiPartParser(META, input_data, others, encoding).parse()

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        return raw_data  # never called: the parser above only feeds the other handlers

    def file_complete(self, file_size: int) -> None:
        return None


def client_file_name(upload: Any) -> str:
    """The name the client sent for this uploaded file (Django's sanitized name otherwise)."""
    return getattr(upload, "client_name", None) or upload.name or ""
