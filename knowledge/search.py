"""Search over the knowledge base: ``knowledge_search`` (its public read service), similar
documents and the metadata query, all narrowed by one ``DocumentFilter``.

Why and how: docs/architecture.md, "knowledge/search.py".
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction
from django.db.models import BooleanField, QuerySet
from django.db.models.expressions import RawSQL

from accounts.models import User
from core.errors import ApplicationError
from knowledge.embeddings import active_embedder, vector_literal
from knowledge.exceptions import EmbeddingError
from knowledge.filters import metadata_filter_sql
from knowledge.models import TEXT_SEARCH_CONFIG, Chunk, ContentType, Document, DocumentStatus
from knowledge.selectors import document_list

SEARCH_MODES = ("vector", "keyword", "hybrid")
MAX_K = 100
# Reciprocal rank fusion's constant (Cormack et al. 2009): damps the weight of top ranks so
# agreement between the two lists matters more than either list's first place.
RRF_K = 60
_MARK_START, _MARK_END = "\x01", "\x02"
_HEADLINE_OPTIONS = (
    f"StartSel={_MARK_START}, StopSel={_MARK_END}, MaxFragments=2, MaxWords=30, "
    'MinWords=12, FragmentDelimiter=" … "'
)


@dataclass(frozen=True)
class SearchHit:
    """One retrieved chunk. ``score`` ranks within the mode (cosine similarity for vector,
    ts_rank_cd for keyword, the RRF sum for hybrid); ``similarity`` is, in every mode, the
    cosine similarity of the chunk to the query, -1..1 (with the bundled model unrelated
    text scores about 0-0.2 and an answer about 0.3-0.6); None for a document not yet in the
    active embedding space."""

    chunk_id: int
    document_id: UUID
    document_title: str
    content_type: str
    content: str
    score: float
    similarity: float | None
    highlight: str
    position: int
    page: int | None
    section: str

    def as_dict(self) -> dict[str, Any]:
        """The API's hit shape: ``{chunk_id, document: {id, title, content_type}, ...}``."""
        data = asdict(self)
        return {
            "chunk_id": data.pop("chunk_id"),
            "document": {
                "id": str(data.pop("document_id")),
                "title": data.pop("document_title"),
                "content_type": data.pop("content_type"),
            },
            **data,
        }


# --- Filters ---------------------------------------------------------------------------------
_CONTENT_TYPE_SHORTHAND = {
    "txt": ContentType.TEXT,
    "md": ContentType.MARKDOWN,
    "html": ContentType.HTML,
    "pdf": ContentType.PDF,
    "docx": ContentType.DOCX,
    "csv": ContentType.CSV,
    "json": ContentType.JSON,
}
# What ``content_types`` accepts: the short names and the MIME types (the API's enum).
CONTENT_TYPE_NAMES = [*_CONTENT_TYPE_SHORTHAND, *ContentType.values]


def _content_types(values: Sequence[str]) -> tuple[str, ...]:
    resolved = []
    for value in values:
        kind = _CONTENT_TYPE_SHORTHAND.get(value, value)
        if kind not in ContentType.values:
            raise ApplicationError(
                f"Unknown content type {value!r}.",
                code="invalid_content_type",
                details={
                    "content_types": [
                        f"Use one of {sorted(_CONTENT_TYPE_SHORTHAND)} or their MIME types."
                    ]
                },
            )
        resolved.append(str(kind))
    return tuple(resolved)


@dataclass(frozen=True)
class DocumentFilter:
    """What narrows the documents a search or a metadata query looks at, built once from
    validated input and passed down: ``metadata_filter`` (see ``knowledge.filters``),
    ``date_from``/``date_to`` on the upload time (a bare date_to includes that day) and
    ``content_types`` (MIME types or short names: "pdf", "md", ...; stored resolved)."""

    metadata_filter: Mapping[str, Any] | None = None
    date_from: dt.date | dt.datetime | None = None
    date_to: dt.date | dt.datetime | None = None
    content_types: Sequence[str] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "content_types", _content_types(self.content_types or ()))

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> DocumentFilter:
        """The filter in validated request data (other keys are ignored)."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if data.get(f.name) is not None})

    def __bool__(self) -> bool:
        """Whether it narrows anything (a selective filter may take the exact vector path)."""
        return bool(self.metadata_filter or self.date_from or self.date_to or self.content_types)

    def conditions(self, alias: str) -> tuple[list[str], list[Any]]:
        """SQL conditions (and parameters) on the documents table aliased ``alias``."""
        where, params = [], []
        meta_sql, meta_params = metadata_filter_sql(self.metadata_filter, f"{alias}.metadata")
        where.append(meta_sql)
        params.extend(meta_params)
        if self.date_from is not None:
            where.append(f"{alias}.created_at >= %s")
            params.append(self.date_from)
        if self.date_to is not None:
            inclusive = isinstance(self.date_to, dt.datetime)
            where.append(f"{alias}.created_at {'<=' if inclusive else '<'} %s")
            params.append(_day_end(self.date_to))
        if self.content_types:
            where.append(f"{alias}.content_type = ANY(%s)")
            params.append(list(self.content_types))
        return where, params


def _day_end(value: dt.date | dt.datetime) -> dt.datetime | dt.date:
    # A bare date_to means "through the end of that day".
    if isinstance(value, dt.datetime):
        return value
    try:
        return dt.datetime.combine(value + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC)
    except OverflowError as exc:
        raise ApplicationError(
            "date_to is past the last representable day.",
            code="invalid_search",
            details={"date_to": ["Use a date up to 9999-12-30."]},
        ) from exc


def _document_conditions(
    *,
    user: User,
    filters: DocumentFilter | None = None,
    alias: str = "d",
    own_only: bool = False,
    searchable_only: bool = True,
) -> tuple[list[str], list[Any]]:
    """SQL conditions (and parameters) on documents the user may see (only their own with
    `own_only`, staff included), narrowed by ``filters``: searchable ones
    (Document.objects.searchable()) unless `searchable_only` is off."""
    where: list[str] = []
    params: list[Any] = []
    if searchable_only:
        where.append(
            f"({alias}.status = %s OR ({alias}.status IN (%s, %s) "
            f"AND {alias}.processed_at IS NOT NULL))"
        )
        params += [DocumentStatus.PROCESSED, DocumentStatus.PENDING, DocumentStatus.PROCESSING]
    if own_only or not user.is_staff:
        where.append(f"{alias}.owner_id = %s")
        params.append(user.pk)
    filter_where, filter_params = (filters or DocumentFilter()).conditions(alias)
    return [*where, *filter_where], [*params, *filter_params]


def document_metadata_query(*, user: User, filters: DocumentFilter) -> QuerySet[Document]:
    """Documents by metadata, dates and types alone (no text query); any status."""
    where, params = _document_conditions(
        user=user,
        filters=filters,
        alias='"knowledge_document"',
        searchable_only=False,  # every status: an operator looks for failures too
    )
    condition = RawSQL(" AND ".join(where), params, output_field=BooleanField())
    return document_list(user=user).filter(condition)


# --- Search ----------------------------------------------------------------------------------
def _few_candidates(where: list[str], params: list[Any]) -> bool:
    """Whether the conditions leave at most KNOWLEDGE_EXACT_SEARCH_MAX_CHUNKS chunks
    (counted up to one past it, so the count's cost is bounded too)."""
    cap = settings.KNOWLEDGE_EXACT_SEARCH_MAX_CHUNKS
    if cap <= 0:
        return False
    sql = f"""
        SELECT count(*) FROM (
            SELECT 1 FROM knowledge_chunk c JOIN knowledge_document d ON d.id = c.document_id
            WHERE {" AND ".join(where)} LIMIT %s
        ) AS capped
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, cap + 1])
        return cursor.fetchone()[0] <= cap


def _exact_candidates(
    query_vector: str, where: list[str], params: list[Any], limit: int
) -> list[tuple[int, float]]:
    """(chunk id, cosine distance), nearest first, by comparing every candidate: for
    selective filters, where walking the HNSW graph means visiting mostly chunks the
    filter then drops (measured in bench/RESULTS.md: ~10x slower at 1% of 100k chunks)."""
    sql = f"""
        WITH candidates AS MATERIALIZED (
            SELECT c.id, c.embedding
            FROM knowledge_chunk c JOIN knowledge_document d ON d.id = c.document_id
            WHERE {" AND ".join(where)}
        )
        SELECT id, embedding <=> %s::vector AS distance
        FROM candidates ORDER BY distance LIMIT %s
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, query_vector, limit])
        return [(row[0], float(row[1])) for row in cursor.fetchall()]


def _vector_candidates(
    query_vector: str, where: list[str], params: list[Any], limit: int, *, filtered: bool = False
) -> list[tuple[int, float]]:
    """(chunk id, cosine distance), nearest first: through the HNSW index, or exactly when
    a filter (``filtered``: metadata, dates, types) leaves few chunks."""
    if filtered and _few_candidates(where, params):
        return _exact_candidates(query_vector, where, params, limit)
    sql = f"""
        WITH nearest AS MATERIALIZED (
            SELECT c.id, c.embedding <=> %s::vector AS distance
            FROM knowledge_chunk c JOIN knowledge_document d ON d.id = c.document_id
            WHERE {" AND ".join(where)}
            ORDER BY c.embedding <=> %s::vector
            LIMIT %s
        )
        SELECT id, distance FROM nearest ORDER BY distance LIMIT %s
    """
    with transaction.atomic(), connection.cursor() as cursor:
        # relaxed_order (pgvector 0.8): the index scan goes on until `limit` rows pass the
        # filters, so a selective filter still returns k; the outer ORDER BY restores order.
        cursor.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
        ef_search = max(settings.KNOWLEDGE_HNSW_EF_SEARCH, limit)
        cursor.execute("SELECT set_config('hnsw.ef_search', %s, true)", [str(ef_search)])
        cursor.execute(sql, [query_vector, *params, query_vector, limit, limit])
        return [(row[0], float(row[1])) for row in cursor.fetchall()]


def _keyword_candidates(
    query: str, where: list[str], params: list[Any], limit: int
) -> list[tuple[int, float]]:
    """(chunk id, ts_rank_cd), best first, through the GIN index on the tsvector."""
    sql = f"""
        SELECT c.id, ts_rank_cd(c.search_vector, q.query) AS rank
        FROM knowledge_chunk c JOIN knowledge_document d ON d.id = c.document_id,
             websearch_to_tsquery(%s::regconfig, %s) AS q(query)
        WHERE c.search_vector @@ q.query AND {" AND ".join(where)}
        ORDER BY rank DESC, c.id
        LIMIT %s
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [TEXT_SEARCH_CONFIG, query, *params, limit])
        return [(row[0], float(row[1])) for row in cursor.fetchall()]


def _reciprocal_rank_fusion(*rankings: list[tuple[int, float]]) -> list[tuple[int, float]]:
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, (chunk_id, _) in enumerate(ranking, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def _hits(
    ranked: list[tuple[int, float]], query: str, query_vector: str | None, space: str
) -> list[SearchHit]:
    if not ranked:
        return []
    sql = """
        SELECT c.id, d.id, d.title, d.content_type, c.content, c.position, c.page, c.section,
               CASE WHEN d.embedding_space = %s AND %s::vector IS NOT NULL
                    THEN 1 - (c.embedding <=> %s::vector) END,
               ts_headline(%s::regconfig, c.content,
                   replace(plainto_tsquery(%s::regconfig, %s)::text, ' & ', ' | ')::tsquery, %s)
        FROM knowledge_chunk c JOIN knowledge_document d ON d.id = c.document_id
        WHERE c.id = ANY(%s)
    """
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            [
                space,
                query_vector,
                query_vector,
                TEXT_SEARCH_CONFIG,
                TEXT_SEARCH_CONFIG,
                query,
                _HEADLINE_OPTIONS,
                [chunk_id for chunk_id, _ in ranked],
            ],
        )
        rows = {row[0]: row for row in cursor.fetchall()}
    hits = []
    for chunk_id, score in ranked:
        row = rows.get(chunk_id)
        if row is None:  # deleted between the two queries
            continue
        # ts_headline does not escape: escape the text, then turn our markers into <mark>.
        highlight = html.escape(row[9]).replace(_MARK_START, "<mark>").replace(_MARK_END, "</mark>")
        hits.append(
            SearchHit(
                chunk_id=chunk_id,
                document_id=row[1],
                document_title=row[2],
                content_type=row[3],
                content=row[4],
                position=row[5],
                page=row[6],
                section=row[7],
                similarity=None if row[8] is None else round(float(row[8]), 6),
                score=round(score, 6),
                highlight=highlight,
            )
        )
    return hits


def _validate_search(query: str, k: int, mode: str, threshold: float | None) -> None:
    problems: dict[str, list[str]] = {}
    if not query or not query.strip():
        problems["query"] = ["A non-empty query is required."]
    if not isinstance(k, int) or not 1 <= k <= MAX_K:
        problems["k"] = [f"k is between 1 and {MAX_K}."]
    if mode not in SEARCH_MODES:
        problems["mode"] = [f"mode is one of {', '.join(SEARCH_MODES)}."]
    if threshold is not None and not 0 <= threshold <= 1:
        problems["similarity_threshold"] = ["A cosine similarity between 0 and 1."]
    if problems:
        raise ApplicationError("Invalid search.", code="invalid_search", details=problems)


def knowledge_search(
    *,
    user: User,
    query: str,
    k: int = 5,
    mode: str = "hybrid",
    filters: DocumentFilter | None = None,
    similarity_threshold: float | None = None,
    own_only: bool = False,
    metadata_filter: Mapping[str, Any] | None = None,
) -> list[SearchHit]:
    """The k chunks of the user's processed documents that best match ``query``.

    - ``mode``: "vector" (cosine similarity through the HNSW index), "keyword" (PostgreSQL
      full text, ``websearch_to_tsquery`` syntax) or "hybrid" (both, merged by reciprocal
      rank fusion).
    - ``filters``: a ``DocumentFilter`` (metadata, upload dates, content types);
      ``metadata_filter`` alone is a shorthand for the metadata part (what an agent's or a
      caller's fixed metadata filter is), replacing that of ``filters``.
    - ``similarity_threshold``: drop hits whose cosine similarity to the query is below it,
      so a higher threshold returns a subset of a lower one's hits.
    - Ownership: a user searches their own documents; staff search all (``visible_to``),
      unless ``own_only`` (a conversation's retrieval reads its owner's documents only).

    Returns hits best first; each has the chunk text, its document, score, similarity and
    an HTML-safe highlight with ``<mark>`` around matching words. Raises ApplicationError
    (400) for invalid arguments and EmbeddingError (503) when the embedder is unusable.
    """
    filters = filters or DocumentFilter()
    if metadata_filter is not None:
        filters = replace(filters, metadata_filter=metadata_filter)
    _validate_search(query, k, mode, similarity_threshold)
    where, params = _document_conditions(user=user, filters=filters, own_only=own_only)
    embedder = active_embedder()
    # Every mode embeds the query: each hit reports its cosine similarity to it. A keyword
    # search without a threshold still answers (similarity None) if the embedder is down.
    try:
        query_vector: str | None = vector_literal(embedder.embed_query(query))
    except EmbeddingError:
        if mode != "keyword" or similarity_threshold is not None:
            raise
        query_vector = None
    vector_where = [*where, "d.embedding_space = %s"]
    vector_params = [*params, embedder.space]
    pool = k if mode != "hybrid" else max(4 * k, 40)

    nearest: list[tuple[int, float]] = []
    if query_vector is not None and mode != "keyword":
        nearest = _vector_candidates(
            query_vector, vector_where, vector_params, pool, filtered=bool(filters)
        )
    # A threshold drops hits after ranking: keyword and hybrid rankings (unlike vector's)
    # do not follow similarity, so they offer more candidates than k to keep k above it.
    offered = k if similarity_threshold is None else 4 * k
    if mode == "vector":
        ranked = [(chunk_id, 1.0 - distance) for chunk_id, distance in nearest]
    elif mode == "keyword":
        ranked = _keyword_candidates(query, where, params, offered)
    else:
        keyword = _keyword_candidates(query, where, params, pool)
        ranked = _reciprocal_rank_fusion(nearest, keyword)[:offered]
    hits = _hits(ranked, query, query_vector, embedder.space)
    if similarity_threshold is not None:
        hits = [
            hit
            for hit in hits
            if hit.similarity is not None and hit.similarity >= similarity_threshold
        ]
    return hits[:k]


def document_similar(*, user: User, document: Document, k: int = 5) -> list[tuple[Document, float]]:
    """Documents nearest to this one's centroid (mean chunk vector), never itself."""
    embedder = active_embedder()
    if document.embedding_space != embedder.space:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT avg(embedding)::text FROM knowledge_chunk WHERE document_id = %s",
            [document.pk],
        )
        centroid = cursor.fetchone()[0]
    if centroid is None:
        return []
    where, params = _document_conditions(user=user)
    where += ["d.embedding_space = %s", "d.id <> %s"]
    params += [embedder.space, document.pk]
    # Nearest chunks to the centroid, then each document scored by its closest chunk.
    best: dict[UUID, float] = {}
    chunk_ids = _vector_candidates(centroid, where, params, max(20 * k, 100))
    owners = dict(
        Chunk.objects.filter(pk__in=[cid for cid, _ in chunk_ids]).values_list("id", "document_id")
    )
    for chunk_id, distance in chunk_ids:
        document_id = owners.get(chunk_id)
        if document_id is not None and document_id not in best:
            best[document_id] = 1.0 - distance
    top = sorted(best.items(), key=lambda item: -item[1])[:k]
    documents = document_list(user=user).in_bulk([document_id for document_id, _ in top])
    return [(documents[did], round(score, 6)) for did, score in top if did in documents]
