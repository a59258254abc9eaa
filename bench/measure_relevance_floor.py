"""How the default relevance floor (CHATTER_RAG_RELEVANCE_FLOOR) was chosen: a measurement.

Real text, the bundled model, the knowledge base's own splitter. The documents are this
project's README (its sections answer the questions below) and the long descriptions of
packages installed in the venv (real prose on other subjects). Each question names a phrase
found only in the passage(s) that answer it; the script embeds every chunk and reports the
cosine similarity of each question to
- its answer: the best chunk holding the phrase (what a floor must keep),
- the README's other chunks (same subject, other topics: a floor may keep some),
- the unrelated package texts (what a floor must drop),
and how many of each a few candidate floors keep.

    .venv/bin/python bench/measure_relevance_floor.py

Not run by `make bench` (it measures a setting, not a speed); figures in bench/RESULTS.md.
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

import django

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatter_project.settings")
os.environ.setdefault("CHATTER_EMBEDDINGS", "local")
django.setup()

from core.embedded_db import embedded_database_ensure  # noqa: E402

embedded_database_ensure()

import numpy as np  # noqa: E402

from knowledge.embeddings import active_embedder  # noqa: E402
from knowledge.models import ContentType  # noqa: E402
from knowledge.parsing import TextBlock  # noqa: E402
from knowledge.splitting import split_blocks  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# (question, a phrase only the answering passage holds), written against the README.
QUESTIONS = [
    ("What happens when the rate limit store is down?", "rate_limiter_unavailable"),
    ("How do I make the server trust X-Forwarded-For from my proxy?", "CHATTER_TRUSTED_PROXIES"),
    ("How do I choose which API version answers my request?", "X-API-Version: 2"),
    ("Which security headers does the server send?", "X-Content-Type-Options"),
    ("How many expensive requests per minute are allowed?", "CHATTER_RATE_LIMIT_EXPENSIVE"),
    ("Are SQL injection attempts refused?", "CHATTER_THREAT_REFUSE_SCORE"),
    ("Which file formats can I upload?", "typed by their bytes"),
    ("What happens if I upload a zip bomb?", "zip bombs"),
    ("How are documents split into chunks?", "langchain-text-splitters"),
    ("Why was this embedding model chosen?", "Why all-MiniLM-L6-v2"),
    ("How many chunks per second does the model embed?", "28 chunks/s"),
    ("How does hybrid search merge its two rankings?", "reciprocal rank fusion"),
    ("How do I switch embeddings to OpenAI?", "CHATTER_OPENAI_EMBEDDING_MODEL"),
    ("Do chat replies cite the documents they used?", "metadata.sources"),
    ("How do I allow my web app's origin to call the API?", "CHATTER_CORS_ORIGINS"),
    ("What does the admin show for each document?", "a search box"),
    ("What does an encrypted PDF upload get?", "encrypted PDF"),
    ("Can I process a failed document again?", "Fix the cause and"),
]
FLOORS = (0.15, 0.2, 0.25, 0.3, 0.35, 0.4)


def unrelated_texts(limit: int = 60) -> list[str]:
    """Long descriptions of installed packages (dist-info METADATA bodies), license-free."""
    site = Path(np.__file__).resolve().parent.parent
    texts = []
    for path in sorted(site.glob("*.dist-info/METADATA")):
        body = path.read_text(errors="replace").split("\n\n", 1)[-1]
        if len(body) > 2000 and "licen" not in body[:300].lower():
            texts.append(body[:6000])
        if len(texts) >= limit:
            break
    return texts


def chunks_of(text: str, kind: str) -> list[str]:
    return [chunk.content for chunk in split_blocks([TextBlock(text)], kind)]


def percentiles(values: list[float]) -> str:
    q = np.percentile(values, [50, 90, 99]) if values else [float("nan")] * 3
    return f"median {q[0]:.3f}  p90 {q[1]:.3f}  p99 {q[2]:.3f}  max {max(values):.3f}"


def main() -> None:
    embedder = active_embedder()
    readme = chunks_of((ROOT / "README.md").read_text(), ContentType.MARKDOWN)
    other = [c for text in unrelated_texts() for c in chunks_of(text, ContentType.MARKDOWN)]
    chunk_vectors = embedder.embed_documents(readme + other)
    readme_vectors, other_vectors = chunk_vectors[: len(readme)], chunk_vectors[len(readme) :]
    question_vectors = embedder.embed_documents([q for q, _ in QUESTIONS])

    answers, same_subject, unrelated, missing = [], [], [], []
    for (_question, phrase), vector in zip(QUESTIONS, question_vectors, strict=True):
        similarities = readme_vectors @ vector  # normalized: the dot product is the cosine
        holding = [i for i, chunk in enumerate(readme) if phrase in chunk]
        if not holding:
            missing.append(phrase)
            continue
        answers.append(max(float(similarities[i]) for i in holding))
        same_subject += [float(s) for i, s in enumerate(similarities) if i not in holding]
        unrelated += [float(s) for s in other_vectors @ vector]

    print(f"model {embedder.space}; README {len(readme)} chunks, unrelated {len(other)} chunks")
    if missing:
        print(f"phrases not found in the README (questions skipped): {missing}")
    print(f"answers ({len(answers)}):           {percentiles(answers)}  min {min(answers):.3f}")
    print(f"README, other topics ({len(same_subject)}): {percentiles(same_subject)}")
    print(f"unrelated texts ({len(unrelated)}):  {percentiles(unrelated)}")
    print("floor  answers kept  other README kept  unrelated kept")
    for floor in FLOORS:
        kept = [
            sum(s >= floor for s in group) / len(group)
            for group in (answers, same_subject, unrelated)
        ]
        print(f"{floor:5.2f}  {kept[0]:12.1%}  {kept[1]:17.1%}  {kept[2]:14.1%}")
    print(f"mean answer similarity {statistics.mean(answers):.3f}")


if __name__ == "__main__":
    main()
