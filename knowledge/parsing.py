"""Typing uploads by their bytes, refusing bad ones up front, and extracting their text.

Why and how: docs/architecture.md, "knowledge/parsing.py".
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
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


# A UTF-8 multibyte sequence: a lead byte and its continuation bytes.
_UTF8_SEQUENCE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}"
)
# The mess ratio (charset-normalizer's "chaos", 0-1) above which a guessed decoding is
# taken for mojibake and refused: correct legacy texts measure 0.0 here.
_MAX_CHAOS = 0.1


def _decode_legacy(data: bytes, error: UnicodeDecodeError) -> str:
    """Text that is not UTF-8: broken UTF-8 is refused (guessing would index mojibake), a
    legacy encoding (cp1252, cp1251, KOI8-R, Shift-JIS, ...) is detected by charset-normalizer
    and refused when it cannot be told with confidence."""
    head = data[:262_144]
    valid = len(_UTF8_SEQUENCE.findall(head))
    invalid = head.decode("utf-8", errors="replace").count("\ufffd")
    if valid >= invalid:
        raise UnreadableFile(
            f"The text is not valid UTF-8 (byte {error.start} is not part of a character); "
            "save it as UTF-8 and upload it again.",
            code="invalid_utf8",
            details={"byte_offset": error.start},
        )
    from charset_normalizer import from_bytes

    matches = from_bytes(head)
    best = matches.best()
    # Short texts leave ties (cp1250 and cp1252 read most French alike): prefer cp1252,
    # the commonest legacy encoding, when it reads the bytes as well as the winner.
    for match in matches:
        if (
            best is not None
            and match.encoding == "cp1252"
            and (match.chaos, -match.coherence) <= (best.chaos, -best.coherence)
        ):
            best = match
    if best is None or best.chaos > _MAX_CHAOS:
        raise UnreadableFile(
            "The text is not UTF-8 and its encoding cannot be told reliably; save it as "
            "UTF-8 and upload it again.",
            code="unknown_encoding",
        )
    try:
        return data.decode(best.encoding)
    except (UnicodeDecodeError, LookupError) as exc:  # past the sampled head
        raise UnreadableFile(
            f"The text is not UTF-8 and does not decode as {best.encoding} either; save it "
            "as UTF-8 and upload it again.",
            code="unknown_encoding",
        ) from exc


def _decode_text(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    if b"\x00" in data:
        raise UnsupportedFile("The file is binary, not text.", code="binary_file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        text = _decode_legacy(data, exc)
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


# Pages whose content streams the upload request decodes (the rest: in processing).
_PDF_PAGES_CHECKED_UP_FRONT = 3


@contextmanager
def _pdf_limits() -> Iterator[None]:
    """pypdf's decoders, capped at KNOWLEDGE_PDF_MAX_STREAM_BYTES per stream (they raise
    LimitReachedError past it), and LimitReachedError turned into a clear refusal."""
    from pypdf import apply_configuration
    from pypdf.errors import LimitReachedError

    limit = settings.KNOWLEDGE_PDF_MAX_STREAM_BYTES
    caps = {
        name: limit
        for name in (
            "zlib_maximum_output_length",
            "lzw_maximum_output_length",
            "run_length_maximum_output_length",
            "brotli_maximum_output_length",
            "jbig2_maximum_output_length",
            "array_based_stream_maximum_output_length",
            "image_maximum_buffer_size",
        )
    }
    try:
        with apply_configuration(**caps, stream_decoding_work_maximum_length=4 * limit):
            yield
    except LimitReachedError as exc:
        raise UnreadableFile(
            f"The PDF would inflate past the safety limit of {limit:,} bytes per stream "
            f"(a decompression bomb?): {exc}",
            code="decompression_bomb",
            details={"max_stream_bytes": limit},
        ) from exc


def _page_content_bytes(page: Any) -> int:
    """Decode a page's content streams (within the limits) and return their size."""
    from pypdf.generic import ArrayObject

    contents = page.get("/Contents")
    if contents is None:
        return 0
    contents = contents.get_object()
    streams = contents if isinstance(contents, ArrayObject) else [contents]
    return sum(len(stream.get_object().get_data()) for stream in streams)


def _check_pdf(data: bytes) -> None:
    from pypdf import PdfReader
    from pypdf.errors import LimitReachedError, PyPdfError

    with _pdf_limits():
        try:
            reader = PdfReader(io.BytesIO(data))
            encrypted = reader.is_encrypted
            pages = 0 if encrypted else len(reader.pages)
            if not encrypted and pages <= settings.KNOWLEDGE_PDF_MAX_PAGES:
                for page in reader.pages[:_PDF_PAGES_CHECKED_UP_FRONT]:
                    _page_content_bytes(page)
        except LimitReachedError:
            raise
        except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
            raise UnreadableFile(f"The PDF is malformed: {exc}", code="malformed_file") from exc
    if encrypted:
        raise UnreadableFile(
            "The PDF is encrypted; upload a copy without a password.", code="encrypted_file"
        )
    if pages > settings.KNOWLEDGE_PDF_MAX_PAGES:
        raise UnreadableFile(
            f"The PDF has {pages:,} pages; the limit is {settings.KNOWLEDGE_PDF_MAX_PAGES:,}.",
            code="too_many_pages",
            details={"pages": pages, "limit": settings.KNOWLEDGE_PDF_MAX_PAGES},
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
        _check_json(text)
    return claimed


def _check_json(text: str) -> None:
    try:
        json.loads(text)
    except RecursionError as exc:
        raise UnreadableFile(
            "The JSON is nested too deeply to read.", code="json_too_deep"
        ) from exc
    except ValueError as exc:
        raise UnreadableFile(f"The JSON is malformed: {exc}", code="malformed_file") from exc


def _sniff_text(text: str) -> str:
    head = text.lstrip()[:200].lower()
    if head.startswith(("{", "[")):
        try:
            json.loads(text)
            return ContentType.JSON
        except RecursionError:
            return ContentType.JSON  # JSON, too deep to read: _check_json refuses it
        except ValueError:
            pass
    if head.startswith(("<!doctype html", "<html")):
        return ContentType.HTML
    return ContentType.TEXT


# --- Extraction ----------------------------------------------------------------------------
def _pdf_blocks(data: bytes) -> list[TextBlock]:
    from pypdf import PdfReader

    limit = settings.KNOWLEDGE_MAX_TEXT_CHARS
    blocks: list[TextBlock] = []
    total = 0
    with _pdf_limits():
        reader = PdfReader(io.BytesIO(data))
        for number, page in enumerate(reader.pages, start=1):
            text = page.extract_text() or ""
            total += len(text)
            if total > limit:
                raise UnreadableFile(
                    f"The PDF's text passes {limit:,} characters by page {number}; split it "
                    "into smaller documents.",
                    code="too_much_text",
                    details={"max_text_chars": limit, "page": number},
                )
            blocks.append(TextBlock(text=text, page=number))
    return blocks


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
    total = sum(len(block.text) for block in blocks)
    if total > settings.KNOWLEDGE_MAX_TEXT_CHARS:
        raise UnreadableFile(
            f"The document holds {total:,} characters of text; the limit is "
            f"{settings.KNOWLEDGE_MAX_TEXT_CHARS:,}. Split it into smaller documents.",
            code="too_much_text",
            details={"max_text_chars": settings.KNOWLEDGE_MAX_TEXT_CHARS},
        )
    if not blocks:
        hint = " (a scanned PDF? OCR is not supported)" if content_type == ContentType.PDF else ""
        raise UnreadableFile(f"The document contains no extractable text{hint}.", code="no_text")
    return blocks
