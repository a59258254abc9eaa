"""Typing uploads by their bytes, refusing bad ones up front, and extracting their text.

``inspect_upload`` is cheap and runs in the request: it decides the content type from the
content (the extension only chooses between text formats) and refuses what can be told
at once: empty, binary, a type that contradicts its extension, malformed JSON, an encrypted
or unparsable PDF, a docx that is not a Word file or would inflate like a zip bomb.
``extract_text`` runs in processing and turns the bytes into ``TextBlock``s: markdown-ish
text (headings as ``#`` lines, so the splitter can follow them) with a page number for PDFs.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from django.conf import settings

from knowledge.exceptions import UnreadableFile, UnsupportedFile
from knowledge.models import ContentType

# pypdf reports recoverable damage through logging; the document still parses.
logging.getLogger("pypdf").setLevel(logging.ERROR)

_EXTENSIONS = {
    ".txt": ContentType.TEXT,
    ".text": ContentType.TEXT,
    ".md": ContentType.MARKDOWN,
    ".markdown": ContentType.MARKDOWN,
    ".html": ContentType.HTML,
    ".htm": ContentType.HTML,
    ".pdf": ContentType.PDF,
    ".docx": ContentType.DOCX,
    ".csv": ContentType.CSV,
    ".json": ContentType.JSON,
}
# Signatures of common binary formats we do not read, named in the refusal.
_BINARY_SIGNATURES = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\x7fELF": "an executable",
    b"MZ": "a Windows executable",
    b"\x1f\x8b": "a gzip archive",
    b"\xd0\xcf\x11\xe0": "a legacy Office file (.doc/.xls)",
    b"Rar!": "a RAR archive",
    b"7z\xbc\xaf": "a 7-Zip archive",
}


@dataclass(frozen=True)
class TextBlock:
    text: str
    page: int | None = None


def _decode_text(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    if b"\x00" in data:
        raise UnsupportedFile("The file is binary, not text.", code="binary_file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")
    controls = sum(1 for char in text[:65536] if ord(char) < 32 and char not in "\t\n\r\f")
    if controls > len(text[:65536]) * 0.01:
        raise UnsupportedFile("The file is binary, not text.", code="binary_file")
    return text


def _check_docx(data: bytes) -> None:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise UnreadableFile("The docx file is damaged.", code="malformed_file") from exc
    with archive:
        members = archive.infolist()
        if "word/document.xml" not in archive.namelist():
            raise UnsupportedFile(
                "This zip archive is not a Word document.", code="unsupported_type"
            )
        # zipfile never inflates a member past its declared size, so declared sizes bound
        # what parsing can allocate: check them before python-docx opens anything.
        total = sum(member.file_size for member in members)
        ratio = max(
            (member.file_size / max(member.compress_size, 1) for member in members), default=0
        )
        if (
            len(members) > 10_000
            or total > settings.KNOWLEDGE_DOCX_MAX_UNCOMPRESSED_BYTES
            or (ratio > settings.KNOWLEDGE_DOCX_MAX_COMPRESSION_RATIO and total > 1024 * 1024)
        ):
            raise UnreadableFile(
                "The docx file would inflate to an unsafe size (a zip bomb?).",
                code="zip_bomb",
                details={"uncompressed_bytes": total, "max_ratio": round(ratio)},
            )


def _check_pdf(data: bytes) -> None:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        encrypted = reader.is_encrypted
        if not encrypted:
            len(reader.pages)
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise UnreadableFile(f"The PDF is malformed: {exc}", code="malformed_file") from exc
    if encrypted:
        raise UnreadableFile(
            "The PDF is encrypted; upload a copy without a password.", code="encrypted_file"
        )


def inspect_upload(data: bytes, filename: str) -> str:
    """The content type of an upload, or a 4xx ApplicationError for what we refuse."""
    if not data.strip():
        raise UnreadableFile("The file is empty.", code="empty_file")
    extension = PurePath(filename).suffix.lower()
    claimed = _EXTENSIONS.get(extension)

    if data.startswith(b"%PDF-"):
        kind = ContentType.PDF
    elif data.startswith(b"PK\x03\x04"):
        kind = ContentType.DOCX
    else:
        for signature, name in _BINARY_SIGNATURES.items():
            if data.startswith(signature):
                raise UnsupportedFile(f"The file is {name}, not a document.", code="binary_file")
        kind = None
    if kind is None and claimed in (ContentType.PDF, ContentType.DOCX):
        raise UnsupportedFile(
            f"The file is named {extension} but its content is not {claimed.label}.",
            code="content_mismatch",
        )
    if kind is not None and claimed is not None and claimed != kind:
        raise UnsupportedFile(
            f"The file is named {extension} but its content is {kind.label}.",
            code="content_mismatch",
        )
    if kind == ContentType.PDF:
        _check_pdf(data)
        return kind
    if kind == ContentType.DOCX:
        _check_docx(data)
        return kind

    text = _decode_text(data)
    if claimed is None:
        if extension not in ("", ".log", ".rst"):
            raise UnsupportedFile(
                f"Files of type {extension} are not supported.",
                code="unsupported_type",
                details={"supported": sorted(_EXTENSIONS)},
            )
        claimed = _sniff_text(text)
    if claimed == ContentType.JSON:
        try:
            json.loads(text)
        except ValueError as exc:
            raise UnreadableFile(f"The JSON is malformed: {exc}", code="malformed_file") from exc
    return claimed


def _sniff_text(text: str) -> str:
    head = text.lstrip()[:200].lower()
    if head.startswith(("{", "[")):
        try:
            json.loads(text)
            return ContentType.JSON
        except ValueError:
            pass
    if head.startswith(("<!doctype html", "<html")):
        return ContentType.HTML
    return ContentType.TEXT


# --- Extraction ----------------------------------------------------------------------------
def _pdf_blocks(data: bytes) -> list[TextBlock]:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    return [
        TextBlock(text=page.extract_text() or "", page=number)
        for number, page in enumerate(reader.pages, start=1)
    ]


def _docx_blocks(data: bytes) -> list[TextBlock]:
    import docx

    document = docx.Document(io.BytesIO(data))
    lines: list[str] = []
    for paragraph in document.paragraphs:
        text = paragraph.text.strip()
        if not text:
            continue
        style = (paragraph.style.name if paragraph.style is not None else "") or ""
        if style.startswith("Heading") and style[len("Heading") :].strip().isdigit():
            lines.append("#" * min(int(style[len("Heading") :]), 6) + " " + text)
        elif style == "Title":
            lines.append("# " + text)
        else:
            lines.append(text)
    for table in document.tables:
        for row in table.rows:
            lines.append(" | ".join(cell.text.strip() for cell in row.cells))
    return [TextBlock("\n\n".join(lines))]


def _html_blocks(text: str) -> list[TextBlock]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(text, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "head"]):
        tag.decompose()
    for level in range(1, 7):
        for heading in soup.find_all(f"h{level}"):
            heading.replace_with(f"\n\n{'#' * level} {heading.get_text(' ', strip=True)}\n\n")
    lines = [line.strip() for line in soup.get_text("\n").splitlines()]
    return [TextBlock("\n".join(line for line in lines if line))]


def _json_lines(value: Any, path: str = "") -> list[str]:
    if isinstance(value, dict):
        return [line for key, item in value.items() for line in _json_lines(item, f"{path}.{key}")]
    if isinstance(value, list):
        return [line for i, item in enumerate(value) for line in _json_lines(item, f"{path}[{i}]")]
    return [f"{path.lstrip('.') or 'value'}: {value}"]


def _csv_blocks(text: str) -> list[TextBlock]:
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return [TextBlock("")]
    header, body = rows[0], rows[1:]
    if not body:
        return [TextBlock(", ".join(header))]
    # One line per record, each value labelled by its column, so every chunk stands alone.
    lines = [
        "; ".join(f"{name}: {value}" for name, value in zip(header, row, strict=False) if value)
        for row in body
    ]
    return [TextBlock("\n".join(lines))]


def extract_text(data: bytes, content_type: str) -> list[TextBlock]:
    """The document's text; raises UnreadableFile when there is none to index."""
    if content_type == ContentType.PDF:
        blocks = _pdf_blocks(data)
    elif content_type == ContentType.DOCX:
        blocks = _docx_blocks(data)
    else:
        text = _decode_text(data)
        if content_type == ContentType.HTML:
            blocks = _html_blocks(text)
        elif content_type == ContentType.JSON:
            blocks = [TextBlock("\n".join(_json_lines(json.loads(text))))]
        elif content_type == ContentType.CSV:
            blocks = _csv_blocks(text)
        else:
            blocks = [TextBlock(text)]
    blocks = [block for block in blocks if block.text.strip()]
    if not blocks:
        hint = " (a scanned PDF? OCR is not supported)" if content_type == ContentType.PDF else ""
        raise UnreadableFile(f"The document contains no extractable text{hint}.", code="no_text")
    return blocks
