"""`/metrics`: refused to who may not scrape; business figures equal to the database's;
request and embedding samples summed over every process."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import uuid
from decimal import Decimal

import numpy as np
import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from conversations.models import Conversation, Message
from core.events import alert_raise
from jobs.models import Job
from knowledge.services import _embed_in_batches
from webhooks.models import Delivery, Endpoint

pytestmark = pytest.mark.django_db
OUTSIDE = "203.0.113.9"


def _samples(client: Client, **extra: str) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.content.decode())
        for s in family.samples
    }


def test_only_allowed_networks_or_the_token_may_scrape(client, settings):
    refused = client.get("/metrics", REMOTE_ADDR=OUTSIDE)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"
    assert client.get("/metrics").status_code == 200  # loopback, the default network

    settings.CHATTER_METRICS_TOKEN = "s3cret-token"
    settings.CHATTER_METRICS_ALLOWED_NETWORKS = []
    assert client.get("/metrics").status_code == 403  # loopback no longer enough
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope", REMOTE_ADDR=OUTSIDE)
    assert wrong.status_code == 401
    assert wrong["WWW-Authenticate"].startswith("Bearer")
    assert wrong.json()["error"]["code"] == "invalid_token"
    right = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token", REMOTE_ADDR=OUTSIDE)
    assert right.status_code == 200 and b"chatter_jobs_queue_depth" in right.content

    settings.CHATTER_METRICS_TOKEN = ""
    settings.CHATTER_METRICS_ALLOWED_NETWORKS = ["203.0.113.0/24"]
    assert client.get("/metrics", REMOTE_ADDR=OUTSIDE).status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="198.51.100.1").status_code == 403


def test_business_figures_are_the_databases(client, make_user):
    user = make_user("alice")
    now = timezone.now()
    for status, priority, finished in [
        ("pending", "high", None),
        ("pending", "high", None),
        ("scheduled", "low", None),
        ("running", "normal", None),
        ("succeeded", "normal", now),
        ("dead", "critical", now),
        ("succeeded", "normal", now - dt.timedelta(days=2)),  # before today: not counted
    ]:
        Job.objects.create(
            handler="echo",
            status=status,
            priority=priority,
            available_at=now - dt.timedelta(seconds=90),
            rank_at=now,
            finished_at=finished,
        )
    endpoint = Endpoint.objects.create(
        owner=user, name="hook", url="https://hooks.example.com/in", secret="whsec_dGVzdA=="
    )
    for status in ("succeeded", "succeeded", "failed", "pending"):
        event = alert_raise(code="m", message="x", owner_id=user.pk)
        Delivery.objects.create(
            endpoint=endpoint,
            event=event,
            event_type=event.type,
            status=status,
            delivered_at=now if status == "succeeded" else None,
        )
    conversation = Conversation.objects.create(owner=user)
    Message.objects.bulk_create(
        [
            Message(conversation=conversation, position=0, role="user", content="q"),
            Message(
                conversation=conversation,
                position=1,
                role="assistant",
                model="openai:gpt-4o-mini",
                tokens_in=120,
                tokens_out=30,
                cost=Decimal("0.25"),
            ),
            Message(
                conversation=conversation,
                position=2,
                role="assistant",
                model="openai:gpt-4o-mini",
                tokens_in=80,
                tokens_out=20,
                cost=Decimal("0.50"),
            ),
        ]
    )

    samples = _samples(client)

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("chatter_jobs_queue_depth", priority="high", status="pending") == 2
    assert value("chatter_jobs_queue_depth", priority="low", status="scheduled") == 1
    assert value("chatter_jobs_queue_depth", priority="normal", status="running") == 1
    assert value("chatter_jobs_queue_depth", priority="critical", status="pending") == 0
    assert 90 <= value("chatter_jobs_oldest_pending_age_seconds") < 3600
    assert value("chatter_jobs_finished_total", priority="normal", outcome="succeeded") == 1
    assert value("chatter_jobs_finished_total", priority="critical", outcome="dead") == 1
    midnight = now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert value(
        "chatter_jobs_finished_created", priority="normal", outcome="succeeded"
    ) == pytest.approx(midnight.timestamp())
    assert value("chatter_webhook_deliveries_total", outcome="succeeded") == 2
    assert value("chatter_webhook_deliveries_total", outcome="failed") == 1
    assert value("chatter_webhook_deliveries_in_flight", status="pending") == 1
    model = "openai:gpt-4o-mini"
    assert value("chatter_llm_tokens_total", model=model, direction="in") == 200
    assert value("chatter_llm_tokens_total", model=model, direction="out") == 50
    assert value("chatter_llm_cost_total", model=model) == pytest.approx(0.75)
    assert value("chatter_llm_replies_total", model=model) == 2
    assert value("chatter_knowledge_documents", status="processed") == 0


def test_requests_are_counted_by_route_pattern_not_path(client, api_client, make_user):
    def requests(samples, route: str) -> float:
        key = (
            "chatter_http_requests_total",
            (("method", "GET"), ("route", route), ("status", "404")),
        )
        return samples.get(key, 0.0)

    route = "api/v1/jobs/<int:pk>/"
    before = _samples(client)
    for pk in (991, 992, 993):
        assert api_client.get(f"/api/v1/jobs/{pk}/").status_code == 404
    after = _samples(client)

    assert requests(after, route) - requests(before, route) == 3
    assert not any("/991/" in str(labels) for _, labels in after)
    latency = ("chatter_http_request_duration_seconds_count", (("method", "GET"), ("route", route)))
    assert after[latency] - before.get(latency, 0.0) == 3


class _FakeEmbedder:
    def __init__(self) -> None:
        self.space = f"fake-{uuid.uuid4().hex[:8]}"

    def embed_documents(self, texts):
        return np.ones((len(texts), 3), dtype=np.float32)


def test_embedding_throughput_sums_every_process(client, settings):
    embedder = _FakeEmbedder()
    _embed_in_batches(embedder, ["a"] * 5)  # this process
    # Another process (as a job worker is) writes to the same directory.
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from core.metrics import EMBEDDED_CHUNKS; "
            f"EMBEDDED_CHUNKS.labels('{embedder.space}').inc(7)",
        ],
        cwd=settings.BASE_DIR,
        check=True,
    )

    samples = _samples(client)

    assert samples[("chatter_embedded_chunks_total", (("space", embedder.space),))] == 12
    assert samples[("chatter_embedding_seconds_total", (("space", embedder.space),))] > 0
