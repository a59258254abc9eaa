"""Knowledge benchmark: ingestion and HNSW search over real text with real embeddings.

Corpus: documentation and docstrings of the packages installed in this venv, split by the
knowledge base's own splitter, embedded with the default (bundled) model. Every vector is a
real embedding: random vectors are HNSW's worst case and say nothing about recall.

Reports: embedding and insert throughput (chunks/s); search p50/p99 and recall@10 against an
exact numpy search over the same vectors (the baseline, timed in the same run) for several
hnsw.ef_search values; and a 1%-selective metadata filter (hits returned, recall).

Runs in its own database on the embedded server (created and dropped here).

    .venv/bin/python bench/bench_knowledge.py            # target 100k chunks, 25 min budget
    BENCH_CHUNKS=20000 BENCH_EMBED_SECONDS=300 .venv/bin/python bench/bench_knowledge.py

Embedding 100k chunks takes about an hour on 2 cores, so vectors are cached in the data
directory and a run resumes where the previous one stopped (BENCH_FRESH=1: start over);
the embedding speed is measured in every run, on what it embeds or on a sample.
"""

from __future__ import annotations

import ast
import hashlib
import os
import random
import statistics
import sys
import time
from pathlib import Path

import django

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatter_project.settings")
os.environ.setdefault("CHATTER_EMBEDDINGS", "local")
django.setup()

from core.embedded_db import embedded_database_ensure  # noqa: E402

embedded_database_ensure()

import numpy as np  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import setup_databases, teardown_databases  # noqa: E402

TARGET = int(os.environ.get("BENCH_CHUNKS", "100000"))
EMBED_SECONDS = float(os.environ.get("BENCH_EMBED_SECONDS", "1500"))
CHUNK_SIZE = int(os.environ.get("BENCH_CHUNK_SIZE", "500"))
QUERIES = int(os.environ.get("BENCH_QUERIES", "200"))
CHUNKS_PER_DOCUMENT = 100
K = 10
STEP = 2048  # chunks embedded between two saves of the cache
SAMPLE = 1024  # chunks whose embedding is timed when the cache already holds the corpus
# Vectors survive between runs (embedding 100k chunks takes an hour on 2 cores): a run
# resumes where the last one stopped. BENCH_FRESH=1 starts over.
CACHE = Path(settings.DATA_DIR) / f"bench_knowledge_vectors_{TARGET}_{CHUNK_SIZE}.npz"


def _digest(texts: list[str]) -> str:
    return hashlib.sha256("\x00".join(texts).encode()).hexdigest()


def load_cached_vectors(texts: list[str]) -> np.ndarray | None:
    """The cached vectors, if they embed a prefix of exactly these texts."""
    if os.environ.get("BENCH_FRESH") or not CACHE.exists():
        return None
    with np.load(CACHE) as saved:
        vectors, digest = saved["vectors"], str(saved["digest"])
    if len(vectors) > len(texts) or digest != _digest(texts[: len(vectors)]):
        log(f"  {CACHE.name} was made from other texts: starting over")
        return None
    return vectors


def save_cached_vectors(vectors: np.ndarray, texts: list[str]) -> None:
    partial = CACHE.with_suffix(".partial.npz")
    np.savez(partial, vectors=vectors, digest=_digest(texts[: len(vectors)]))
    partial.replace(CACHE)


def log(message: str) -> None:
    print(message, flush=True)


def corpus_texts() -> list[tuple[str, str]]:
    """(source name, text): docs files and docstrings from site-packages, shuffled by file."""
    site = Path(np.__file__).resolve().parent.parent
    files = sorted(site.rglob("*.py")) + sorted(
        p for ext in ("*.md", "*.rst", "*.txt") for p in site.rglob(ext)
    )
    random.Random(5).shuffle(files)
    for path in files:
        name = str(path.relative_to(site))
        if "licen" in name.lower() or ".dist-info" in name:
            continue
        try:
            source = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if path.suffix != ".py":
            yield name, source
            continue
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            continue
        docstrings = [
            ast.get_docstring(node)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        ]
        text = "\n\n".join(doc for doc in docstrings if doc and len(doc) > 80)
        if text:
            yield name, text


def collect_chunks(limit: int) -> list[tuple[str, str]]:
    from knowledge.parsing import TextBlock
    from knowledge.splitting import split_blocks

    seen: set[str] = set()
    chunks: list[tuple[str, str]] = []
    for name, text in corpus_texts():
        for chunk in split_blocks([TextBlock(text)], "text/plain", chunk_size=CHUNK_SIZE):
            content = chunk.content.strip()
            if len(content) < 40 or content in seen:
                continue
            seen.add(content)
            chunks.append((name, content))
        if len(chunks) >= limit:
            break
    return chunks[:limit]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def main() -> None:
    from accounts.models import User
    from knowledge.embeddings import active_embedder, vector_literal
    from knowledge.models import Document
    from knowledge.search import DocumentFilter, _document_conditions, _vector_candidates
    from knowledge.services import chunks_copy

    t0 = time.perf_counter()
    pool = collect_chunks(TARGET + QUERIES)
    log(
        f"corpus: {len(pool)} distinct chunks of <= {CHUNK_SIZE} chars "
        f"from site-packages docs/docstrings ({time.perf_counter() - t0:.0f}s)"
    )
    rng = random.Random(7)
    query_idx = set(rng.sample(range(len(pool)), QUERIES))
    queries = [pool[i][1] for i in sorted(query_idx)]
    corpus = [pool[i] for i in range(len(pool)) if i not in query_idx]

    embedder = active_embedder()
    embedder.embed_query("warm up")
    log(f"embedding with {embedder.space}, budget {EMBED_SECONDS:.0f}s, target {TARGET}")
    vectors: list[np.ndarray] = []
    texts = [text for _, text in corpus]
    cached = load_cached_vectors(texts)
    if cached is not None:
        vectors.append(cached)
        log(f"  resuming from {len(cached)} vectors cached by an earlier run ({CACHE.name})")
    embedded = reused = sum(len(v) for v in vectors)
    # Embedding speed is always measured: on the chunks this run embeds, at least SAMPLE of
    # them (re-embedding cached ones when the corpus is complete).
    if len(texts) - embedded < SAMPLE or EMBED_SECONDS <= 0:
        begin = time.perf_counter()
        embedder.embed_documents(texts[:SAMPLE])
        sample_rate = SAMPLE / (time.perf_counter() - begin)
        log(f"  speed sample: {SAMPLE} cached chunks embedded again, {sample_rate:.1f} chunks/s")
    started = time.perf_counter()
    while embedded < len(texts) and time.perf_counter() - started < EMBED_SECONDS:
        vectors.append(embedder.embed_documents(texts[embedded : embedded + STEP]))
        embedded += len(vectors[-1])
        elapsed = time.perf_counter() - started
        log(f"  embedded {embedded} chunks, {(embedded - reused) / elapsed:.1f} chunks/s")
        # Kept so a failure further on, or the next run, does not pay for them again.
        save_cached_vectors(np.vstack(vectors), texts)
    embed_seconds = time.perf_counter() - started
    fresh = embedded - reused
    if fresh:
        sample_rate = fresh / embed_seconds
    matrix = np.vstack(vectors)
    corpus = corpus[:embedded]
    query_vectors = embedder.embed_documents(queries)
    token_counts = embedder.count_tokens([text for _, text in corpus[:2000]])

    # Its own database, never the tests' one (created by pytest-django, maybe running now).
    connection.settings_dict["TEST"]["NAME"] = "chatter_bench_knowledge"
    old = setup_databases(verbosity=0, interactive=False, keepdb=False)
    try:
        owner = User.objects.create_user("bench")
        n_docs = (embedded + CHUNKS_PER_DOCUMENT - 1) // CHUNKS_PER_DOCUMENT
        documents = Document.objects.bulk_create(
            Document(
                owner=owner,
                title=f"bench {i}",
                filename=f"bench{i}.txt",
                content_type="text/plain",
                size=0,
                sha256=hashlib.sha256(f"bench{i}".encode()).hexdigest(),
                source=b"",
                metadata={"bucket": i % 100},
                status="processed",
                embedding_space=embedder.space,
            )
            for i in range(n_docs)
        )
        doc_of = np.array([i // CHUNKS_PER_DOCUMENT for i in range(embedded)])

        def rows(start: int, stop: int):
            return [
                (
                    documents[doc_of[i]].pk,
                    i % CHUNKS_PER_DOCUMENT,
                    None,
                    corpus[i][0][:500],
                    corpus[i][1],
                    0,
                    hashlib.sha256(corpus[i][1].encode()).hexdigest(),
                    matrix[i],
                )
                for i in range(start, stop)
            ]

        # 1) The per-document path: COPY into a table whose HNSW index is live.
        live = min(5000, embedded // 4)
        started = time.perf_counter()
        chunks_copy(rows(0, live))
        live_rate = live / (time.perf_counter() - started)
        # 2) Bulk load: drop the index, COPY, rebuild it with enough memory.
        with connection.cursor() as cursor:
            cursor.execute("DROP INDEX knowledge_chunk_emb_hnsw")
        started = time.perf_counter()
        for start in range(live, embedded, 20000):
            chunks_copy(rows(start, min(start + 20000, embedded)))
        bulk_seconds = time.perf_counter() - started
        bulk_rate = (embedded - live) / bulk_seconds if embedded > live else float("nan")
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute("SET maintenance_work_mem = '1GB'")
            cursor.execute(
                "CREATE INDEX knowledge_chunk_emb_hnsw ON knowledge_chunk "
                "USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
            )
            cursor.execute("ANALYZE knowledge_chunk")
            cursor.execute("ANALYZE knowledge_document")
        index_seconds = time.perf_counter() - started

        # Exact baseline over the vectors as stored (order by chunk id = insertion order).
        with connection.cursor() as cursor:
            cursor.execute("SELECT id FROM knowledge_chunk ORDER BY id")
            chunk_ids = np.array([row[0] for row in cursor.fetchall()])
        assert len(chunk_ids) == embedded

        def exact(query: np.ndarray, mask: np.ndarray | None = None) -> tuple[set[int], float]:
            begin = time.perf_counter()
            scores = matrix @ query
            if mask is not None:
                scores = np.where(mask, scores, -np.inf)
            top = np.argpartition(-scores, K)[:K]
            elapsed = time.perf_counter() - begin
            return {int(chunk_ids[i]) for i in top}, elapsed

        # The same conditions knowledge_search puts on the vector query.
        where, params = _document_conditions(user=owner)
        where += ["d.embedding_space = %s"]
        params += [embedder.space]
        literals = [vector_literal(q) for q in query_vectors]
        truths = [exact(q) for q in query_vectors]
        exact_p50 = statistics.median(t for _, t in truths) * 1000

        results = {}
        for ef in (40, 100, 200):
            settings.KNOWLEDGE_HNSW_EF_SEARCH = ef
            for literal in literals[:10]:  # warm the index into shared buffers
                _vector_candidates(literal, where, params, K)
            latencies, recalls = [], []
            for literal, (truth, _) in zip(literals, truths, strict=True):
                begin = time.perf_counter()
                found = _vector_candidates(literal, where, params, K)
                latencies.append((time.perf_counter() - begin) * 1000)
                recalls.append(len(truth & {cid for cid, _ in found}) / K)
            results[ef] = (
                percentile(latencies, 50),
                percentile(latencies, 99),
                statistics.mean(recalls),
            )

        # 1%-selective filter: documents in bucket 7 hold ~1% of the chunks.
        settings.KNOWLEDGE_HNSW_EF_SEARCH = 100
        bucket_mask = (doc_of % 100) == 7
        f_where, f_params = _document_conditions(
            user=owner, filters=DocumentFilter(metadata_filter={"bucket": 7})
        )
        f_where += ["d.embedding_space = %s"]
        f_params += [embedder.space]
        filtered = {}
        exact_cap = settings.KNOWLEDGE_EXACT_SEARCH_MAX_CHUNKS
        for label, force_index in (
            (f"service: exact when <= {exact_cap} candidates", False),
            ("HNSW path forced, iterative scan", True),
        ):
            settings.KNOWLEDGE_EXACT_SEARCH_MAX_CHUNKS = 0 if force_index else exact_cap
            counts, recalls, latencies = [], [], []
            for literal, query in zip(literals, query_vectors, strict=True):
                truth, _ = exact(query, bucket_mask)
                from django.db import transaction

                with transaction.atomic():
                    if force_index:
                        with connection.cursor() as cursor:
                            cursor.execute("SET LOCAL enable_sort = off")
                    begin = time.perf_counter()
                    found = _vector_candidates(literal, f_where, f_params, K, filtered=True)
                    latencies.append((time.perf_counter() - begin) * 1000)
                counts.append(len(found))
                recalls.append(len(truth & {cid for cid, _ in found}) / K)
            filtered[label] = (
                min(counts),
                statistics.mean(counts),
                statistics.mean(recalls),
                percentile(latencies, 50),
            )
        settings.KNOWLEDGE_EXACT_SEARCH_MAX_CHUNKS = exact_cap
        # What the bounded count costs when a filter keeps everything (HNSW path after it).
        b_where, b_params = _document_conditions(
            user=owner, filters=DocumentFilter(metadata_filter={"bucket": {"$gte": 0}})
        )
        b_where += ["d.embedding_space = %s"]
        b_params += [embedder.space]
        broad = []
        for literal in literals:
            begin = time.perf_counter()
            _vector_candidates(literal, b_where, b_params, K, filtered=True)
            broad.append((time.perf_counter() - begin) * 1000)
        broad_p50 = percentile(broad, 50)
        with connection.cursor() as cursor:
            cursor.execute(
                "EXPLAIN SELECT c.id FROM knowledge_chunk c JOIN knowledge_document d "
                "ON d.id = c.document_id WHERE d.metadata @> '{\"bucket\": 7}' "
                "ORDER BY c.embedding <=> %s::vector LIMIT 10",
                [literals[0]],
            )
            plan = " / ".join(row[0].strip() for row in cursor.fetchall()[:4])
    finally:
        teardown_databases(old, verbosity=0)

    log("")
    log("== Knowledge benchmark ==")
    log(
        f"chunks embedded and indexed: {embedded} (target {TARGET}); "
        f"mean {statistics.mean(token_counts):.0f} tokens/chunk"
    )
    log(
        f"embedding ({embedder.space}, CPU, {os.cpu_count()} cores): "
        + (
            f"{sample_rate:.1f} chunks/s ({fresh} chunks in {embed_seconds:.0f}s"
            + (f"; {reused} cached by an earlier run)" if reused else ")")
            if fresh
            else f"{sample_rate:.1f} chunks/s on a {SAMPLE}-chunk sample (all {reused} "
            "vectors cached by an earlier run)"
        )
    )
    log(f"insert, binary COPY into the live HNSW index: {live_rate:,.0f} chunks/s ({live} chunks)")
    log(
        f"insert, binary COPY without index: {bulk_rate:,.0f} chunks/s; "
        f"HNSW build (m=16, ef_construction=64, 1GB): {index_seconds:.0f}s"
    )
    store_seconds = bulk_seconds + index_seconds + live / live_rate
    ingest = embedded / (embedded / sample_rate + store_seconds)
    log(f"end to end ingestion: {ingest:.1f} chunks/s (embedding dominates)")
    log(f"exact numpy top-{K} baseline: p50 {exact_p50:.2f} ms/query")
    for ef, (p50, p99, recall) in results.items():
        log(
            f"HNSW ef_search={ef}: p50 {p50:.2f} ms, p99 {p99:.2f} ms, recall@10 {recall:.3f}, "
            f"p50 ratio vs exact numpy {p50 / exact_p50:.2f}x"
        )
    for label, (lowest, mean_count, recall, p50) in filtered.items():
        log(
            f"1% filter ({label}): min hits {lowest}/10, mean {mean_count:.1f}, "
            f"recall@10 {recall:.3f}, p50 {p50:.2f} ms"
        )
    log(
        f"filter keeping every chunk (count, then HNSW): p50 {broad_p50:.2f} ms "
        f"vs unfiltered {results[100][0]:.2f} ms"
    )
    log(f"planner, filtered query: {plan[:300]}")


if __name__ == "__main__":
    main()
