"""Builders for real test files (made here, never committed) and an upload helper."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from knowledge.embeddings import active_embedder


@pytest.fixture(scope="session", autouse=True)
def _embedding_model_loaded_once() -> None:
    """Load the bundled model once for the whole session (a few seconds on 2 cores)."""
    active_embedder().embed_query("warm up")


def make_pdf(
    pages: list[str], *, password: str | None = None, padding: dict[int, int] | None = None
) -> bytes:
    """A real PDF with one line of Helvetica text per page, written with pypdf, its content
    streams Flate-compressed. ``padding`` {page index: n} appends n spaces to that page's
    content stream: a few KB in the file that inflate to n bytes (a decompression bomb)."""
    from pypdf import PdfWriter
    from pypdf.generic import (
        DecodedStreamObject,
        DictionaryObject,
        NameObject,
    )

    writer = PdfWriter()
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    for text in pages:
        page = writer.add_blank_page(width=612, height=792)
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        stream = DecodedStreamObject()
        content = f"BT /F1 12 Tf 72 720 Td ({escaped}) Tj ET".encode("latin-1")
        stream.set_data(content + b" " * (padding or {}).get(len(writer.pages) - 1, 0))
        page[NameObject("/Contents")] = writer._add_object(stream.flate_encode())
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
        )
    if password:
        writer.encrypt(password, algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def make_docx(blocks: list[tuple[str, str]]) -> bytes:
    """A real docx: ("h1"|"h2"|"p", text) blocks, written with python-docx."""
    import docx

    document = docx.Document()
    for kind, text in blocks:
        if kind == "p":
            document.add_paragraph(text)
        else:
            document.add_heading(text, level=int(kind[1]))
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def make_zip_bomb_docx(inflated_bytes: int = 64 * 1024 * 1024) -> bytes:
    """A docx-shaped zip whose document.xml inflates from ~64 KiB to `inflated_bytes`."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("word/document.xml", "w", force_zip64=True) as member:
            block = b"\0" * (1024 * 1024)
            for _ in range(inflated_bytes // len(block)):
                member.write(block)
    return out.getvalue()


Upload = Callable[..., Any]


@pytest.fixture
def upload() -> Upload:
    def post(
        client: APIClient,
        name: str,
        data: bytes | str,
        *,
        metadata: str | None = None,
        **extra: Any,
    ) -> Any:
        body = data.encode() if isinstance(data, str) else data
        payload: dict[str, Any] = {"file": SimpleUploadedFile(name, body), **extra}
        if metadata is not None:
            payload["metadata"] = metadata
        return client.post("/api/v1/documents/", payload, format="multipart")

    return post


@pytest.fixture(autouse=True)
def _process_uploads_inline(settings) -> None:
    """These tests are about parsing and search: the upload request processes the document
    itself. tests/knowledge/test_processing_job.py proves the real job path."""
    settings.KNOWLEDGE_PROCESS_INLINE = True
