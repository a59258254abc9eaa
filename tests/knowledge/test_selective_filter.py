"""A filter that keeps 1% of the chunks must still return k hits through the HNSW index."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from knowledge.embeddings import active_embedder, vector_literal
from knowledge.models import Chunk, Document
from knowledge.selectors import knowledge_search
from knowledge.services import chunks_copy

pytestmark = pytest.mark.django_db

SUBJECTS = ["The engineer", "A farmer", "The orchestra", "Our cat", "The senator"]
VERBS = ["repairs", "studies", "paints", "describes", "ignores", "sells", "photographs", "fears"]
OBJECTS = ["an old bridge", "the harvest", "a violin", "the tax law", "a mountain"]
# 5 x 8 x 5 = 200 distinct sentences, embedded for real once.
SENTENCES = [" ".join(parts) + "." for parts in itertools.product(SUBJECTS, VERBS, OBJECTS)]
DOCUMENTS, CHUNKS_PER_DOCUMENT = 100, 30


@pytest.fixture
def large_corpus(user) -> Document:
    embedder = active_embedder()
    vectors = embedder.embed_documents(SENTENCES)
    documents = Document.objects.bulk_create(
        Document(
            owner=user,
            title=f"doc {i}",
            filename=f"doc{i}.txt",
            content_type="text/plain",
            size=1,
            sha256=hashlib.sha256(str(i).encode()).hexdigest(),
            source=b"-",
            metadata={"group": i},
            status="processed",
            embedding_space=embedder.space,
        )
        for i in range(DOCUMENTS)
    )
    rows = []
    for d, document in enumerate(documents):
        for position in range(CHUNKS_PER_DOCUMENT):
            s = (d * 7 + position * 13) % len(SENTENCES)
            text = SENTENCES[s]
            digest = hashlib.sha256(text.encode()).hexdigest()
            rows.append((document.pk, position, None, "", text, 8, digest, vectors[s]))
    chunks_copy(rows)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE knowledge_chunk")
        cursor.execute("ANALYZE knowledge_document")
    return documents[42]


def search_one_document(user):
    """k=10 nearest chunks among the 1% of the corpus in document 42."""
    return knowledge_search(
        user=user,
        query="a musician plays music",
        k=10,
        mode="vector",
        metadata_filter={"group": 42},
    )


def test_a_one_percent_filter_still_returns_k_hits(user, large_corpus):
    assert Chunk.objects.count() == DOCUMENTS * CHUNKS_PER_DOCUMENT

    hits = search_one_document(user)

    assert len(hits) == 10
    assert {hit.document_id for hit in hits} == {large_corpus.pk}
    similarities = [hit.similarity for hit in hits]
    assert similarities == sorted(similarities, reverse=True)


def _plan(sql: str, params: list) -> str:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


FILTERED = (
    "SELECT c.id FROM knowledge_chunk c JOIN knowledge_document d ON d.id = c.document_id "
    "WHERE d.metadata @> '{\"group\": 42}' ORDER BY c.embedding <=> %s::vector LIMIT 10"
)


def test_through_the_index_the_filter_needs_iterative_scans(user, large_corpus, settings):
    """Make the planner walk the HNSW graph even for the filtered query (small tables
    otherwise get an exact sort), then show what iterative scans change."""
    settings.KNOWLEDGE_EXACT_SEARCH_MAX_CHUNKS = 0  # the service's exact path is tested below
    query = vector_literal(active_embedder().embed_query("a musician plays music"))
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_sort = off")  # rolled back with the test
        cursor.execute("SET LOCAL hnsw.iterative_scan = off")
        assert "knowledge_chunk_emb_hnsw" in _plan(FILTERED, [query])
        cursor.execute(FILTERED, [query])
        starved = len(cursor.fetchall())

    hits = search_one_document(user)

    # ef_search candidates, of which ~1% pass the filter: far fewer than 10.
    assert starved < 10
    assert len(hits) == 10
    assert {hit.document_id for hit in hits} == {large_corpus.pk}


def test_unfiltered_search_walks_the_hnsw_index(user, large_corpus):
    query = vector_literal(active_embedder().embed_query("a musician plays music"))
    plan = _plan(
        "SELECT id FROM knowledge_chunk ORDER BY embedding <=> %s::vector LIMIT 10", [query]
    )

    assert "knowledge_chunk_emb_hnsw" in plan


def _searches(user, metadata_filter) -> tuple[list, list[str]]:
    with CaptureQueriesContext(connection) as queries:
        hits = knowledge_search(
            user=user,
            query="a musician plays music",
            k=10,
            mode="vector",
            metadata_filter=metadata_filter,
        )
    return hits, [q["sql"] for q in queries.captured_queries]


def test_a_selective_filter_compares_every_candidate_exactly(user, large_corpus, settings):
    settings.KNOWLEDGE_EXACT_SEARCH_MAX_CHUNKS = 100  # document 42 holds 30 chunks

    hits, sql = _searches(user, {"group": 42})

    assert any("candidates AS MATERIALIZED" in q for q in sql)
    chunks = list(Chunk.objects.filter(document=large_corpus))
    query = active_embedder().embed_query("a musician plays music")
    similarity = {c.id: float(np.dot(np.asarray(c.embedding), query)) for c in chunks}
    truth = sorted(similarity, key=lambda cid: -similarity[cid])[:10]
    assert [hit.similarity for hit in hits] == pytest.approx(
        [similarity[cid] for cid in truth], abs=1e-5
    )


def test_a_broad_filter_walks_the_index(user, large_corpus, settings):
    settings.KNOWLEDGE_EXACT_SEARCH_MAX_CHUNKS = 100

    hits, sql = _searches(user, {"group": {"$gte": 0}})  # all 3,000 chunks

    assert len(hits) == 10
    assert not any("candidates AS MATERIALIZED" in q for q in sql)
    assert any("hnsw.iterative_scan" in q for q in sql)
