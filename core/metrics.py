"""Per-process Prometheus metrics, summed across processes by prometheus-client's
multiprocess mode.

Only what no table records lives here: request latencies (the HTTP layer) and embedding
throughput (knowledge). Every process writes its samples to its own memory-mapped file in
PROMETHEUS_MULTIPROC_DIR (settings point it into the data dir; `serve` empties it at start),
and `/metrics` sums the files of every web and job worker on the host. Business figures
(queue depth, job outcomes, deliveries, tokens, cost) are read from PostgreSQL when scraped
(console.metrics), so they are right however many processes or machines there are.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# registry=None: exposition reads the multiprocess files (console.metrics), not a registry.
HTTP_REQUESTS = Counter(
    "chatter_http_requests",
    "HTTP requests answered, by method, route pattern and status code.",
    ["method", "route", "status"],
    registry=None,
)
HTTP_REQUEST_SECONDS = Histogram(
    "chatter_http_request_duration_seconds",
    "Time to the response's headers (a stream's body is not included), by method and route.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=None,
)
EMBEDDED_CHUNKS = Counter(
    "chatter_embedded_chunks",
    "Texts embedded for the knowledge base (document chunks), by embedding space.",
    ["space"],
    registry=None,
)
EMBEDDING_SECONDS = Counter(
    "chatter_embedding_seconds",
    "Time spent embedding them; chunks / seconds is the embedding throughput.",
    ["space"],
    registry=None,
)
