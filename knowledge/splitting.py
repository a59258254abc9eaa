"""Splitting extracted text into chunks with langchain-text-splitters."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.conf import settings
from langchain_text_splitters import MarkdownHeaderTextSplitter, RecursiveCharacterTextSplitter

from knowledge.models import ContentType
from knowledge.parsing import TextBlock

# Formats whose extracted text carries "#" headings (see parsing): split along them first.
_HEADED = {ContentType.MARKDOWN, ContentType.HTML, ContentType.DOCX}
_HEADERS = [("#", "h1"), ("##", "h2"), ("###", "h3")]


@dataclass(frozen=True)
class ChunkText:
    position: int
    content: str
    page: int | None
    section: str

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.content.encode()).hexdigest()


def _splitter(chunk_size: int | None, chunk_overlap: int | None) -> RecursiveCharacterTextSplitter:
    size = chunk_size or settings.KNOWLEDGE_CHUNK_SIZE
    overlap = settings.KNOWLEDGE_CHUNK_OVERLAP if chunk_overlap is None else chunk_overlap
    return RecursiveCharacterTextSplitter(chunk_size=size, chunk_overlap=min(overlap, size // 2))


def split_blocks(
    blocks: list[TextBlock],
    content_type: str,
    *,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
) -> list[ChunkText]:
    """Chunks in reading order; markdown-like text is split by its headings first."""
    splitter = _splitter(chunk_size, chunk_overlap)
    pieces: list[tuple[str, int | None, str]] = []
    for block in blocks:
        # PDF text extraction can yield NUL characters, which PostgreSQL text cannot store.
        block = TextBlock(block.text.replace("\x00", ""), block.page)
        if content_type in _HEADED:
            sections = MarkdownHeaderTextSplitter(
                headers_to_split_on=_HEADERS, strip_headers=True
            ).split_text(block.text)
            for section in sections:
                titles = [section.metadata[key] for _, key in _HEADERS if key in section.metadata]
                for i, text in enumerate(splitter.split_text(section.page_content)):
                    # The heading opens its section's first chunk, so keyword search finds
                    # it, without a chunk holding nothing but a heading.
                    if i == 0 and titles:
                        text = f"{titles[-1]}\n\n{text}"
                    pieces.append((text, block.page, " > ".join(titles)[:500]))
        else:
            for text in splitter.split_text(block.text):
                pieces.append((text, block.page, ""))
    return [
        ChunkText(position=i, content=text, page=page, section=section)
        for i, (text, page, section) in enumerate(pieces)
        if text.strip()
    ]
