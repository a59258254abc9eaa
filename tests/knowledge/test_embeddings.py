"""The OpenAI embedding space (against a loopback OpenAI-compatible server), dimension
mismatches, and `manage.py reembed` moving documents between spaces."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from django.core.management import call_command

from knowledge.models import Document

pytestmark = pytest.mark.django_db


def bag_of_words(text: str, dimensions: int) -> list[float]:
    """A deterministic stand-in embedding: texts sharing words get similar vectors."""
    vector = np.zeros(dimensions, dtype=np.float32)
    for word in re.findall(r"[a-z]+", text.lower()):
        vector[int(hashlib.md5(word.encode()).hexdigest(), 16) % dimensions] += 1.0
    norm = np.linalg.norm(vector)
    return (vector / norm if norm else vector + 1 / np.sqrt(dimensions)).tolist()


class FakeOpenAI:
    def __init__(self, dimensions: int | None) -> None:
        self.dimensions = dimensions  # None: honour the request's `dimensions`
        self.requests: list[dict] = []


@pytest.fixture
def fake_openai(monkeypatch, settings) -> Iterator[FakeOpenAI]:
    state = FakeOpenAI(dimensions=None)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append({"path": self.path, **body})
            width = state.dimensions or body.get("dimensions") or 1536
            data = []
            for index, text in enumerate(body["input"]):
                vector = bag_of_words(text, width)
                if body.get("encoding_format") == "base64":
                    encoded = base64.b64encode(np.array(vector, dtype="<f4").tobytes()).decode()
                    data.append({"object": "embedding", "index": index, "embedding": encoded})
                else:
                    data.append({"object": "embedding", "index": index, "embedding": vector})
            payload = json.dumps(
                {
                    "object": "list",
                    "data": data,
                    "model": body["model"],
                    "usage": {"prompt_tokens": 1, "total_tokens": 1},
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{server.server_port}/v1")
    settings.KNOWLEDGE_EMBEDDINGS = "openai"
    yield state
    server.shutdown()
    server.server_close()


def search(client, query, mode="vector"):
    return client.post("/api/v1/knowledge/search/", {"query": query, "mode": mode}, format="json")


def test_openai_embeddings_are_used_when_configured(api_client, upload, fake_openai):
    doc = upload(api_client, "birds.txt", "Parrots can imitate human speech.").json()

    assert doc["status"] == "processed", doc
    assert doc["embedding_space"] == "openai:text-embedding-3-small:384"
    request = fake_openai.requests[0]
    assert request["path"] == "/v1/embeddings"
    assert request["model"] == "text-embedding-3-small"
    assert request["dimensions"] == 384
    assert request["input"] == ["Parrots can imitate human speech."]
    hits = search(api_client, "parrots speech").json()["results"]
    assert [hit["document"]["id"] for hit in hits] == [doc["id"]]


def test_a_dimension_mismatch_is_a_clear_error(api_client, upload, fake_openai):
    fake_openai.dimensions = 1536

    doc = upload(api_client, "birds.txt", "Parrots can imitate human speech.").json()
    response = search(api_client, "parrots")

    assert doc["status"] == "failed"
    assert "1536-dimensional" in doc["failure_reason"]
    assert "384" in doc["failure_reason"]
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "embedding_dimension_mismatch"
    assert response.json()["error"]["details"] == {
        "expected": 384,
        "got": 1536,
        "space": "openai:text-embedding-3-small:384",
    }


def test_an_unknown_provider_is_a_clear_error(api_client, settings):
    settings.KNOWLEDGE_EMBEDDINGS = "word2vec"

    response = search(api_client, "anything")

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "embedding_misconfigured"


def test_reembed_moves_documents_into_the_active_space_without_mixing(
    api_client, upload, settings, fake_openai
):
    settings.KNOWLEDGE_EMBEDDINGS = "local"
    doc = upload(api_client, "birds.md", "# Birds\n\nParrots can imitate human speech.").json()
    assert doc["embedding_space"] == "local:all-MiniLM-L6-v2"
    settings.KNOWLEDGE_EMBEDDINGS = "openai"

    # Until it is re-embedded, the document is out of the vector space, never mixed in;
    # keyword search does not depend on the space.
    assert search(api_client, "parrots speech").json()["results"] == []
    assert len(search(api_client, "parrots", mode="keyword").json()["results"]) == 1

    out, err = io.StringIO(), io.StringIO()
    call_command("reembed", stdout=out, stderr=err)

    assert "Re-embedding 1 document(s), 1 chunk(s) into openai:" in out.getvalue()
    assert "Re-embedded 1 document(s)." in out.getvalue()
    assert Document.objects.get(pk=doc["id"]).embedding_space == "openai:text-embedding-3-small:384"
    hits = search(api_client, "parrots speech").json()["results"]
    assert [hit["document"]["id"] for hit in hits] == [doc["id"]]
    assert hits[0]["similarity"] > 0.5  # the fake server's vector, not the old one

    again = io.StringIO()
    call_command("reembed", stdout=again, stderr=io.StringIO())
    assert "Re-embedding 0 document(s)" in again.getvalue()
