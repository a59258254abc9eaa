"""The admin index's dashboard: figures from the database, drawn as SVG, each linking to the
admin list behind it; a bounded number of queries whatever the data."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from decimal import Decimal
from html import unescape
from urllib.parse import unquote

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents.models import Agent, AgentInteraction
from conversations.models import Conversation, Message
from core.events import alert_raise
from jobs.models import Job
from knowledge.models import Chunk, ContentType, Document
from webhooks.models import Delivery, Endpoint

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(make_user):
    return make_user("root", staff=True, password="pw")


@pytest.fixture
def admin_client(operator) -> Client:
    client = Client()
    client.force_login(operator)
    return client


def _messages(user, *, model: str, tokens: tuple[int, int], cost, days_ago: int = 0, n: int = 1):
    conversation = Conversation.objects.create(owner=user, title=f"{model} talk")
    rows = []
    for i in range(n):
        rows += [
            Message(conversation=conversation, position=2 * i, role="user", content="q"),
            Message(
                conversation=conversation,
                position=2 * i + 1,
                role="assistant",
                content="a",
                model=model,
                tokens_in=tokens[0],
                tokens_out=tokens[1],
                cost=cost,
            ),
        ]
    Message.objects.bulk_create(rows)
    if days_ago:
        Message.objects.filter(conversation=conversation).update(
            created_at=timezone.now() - dt.timedelta(days=days_ago)
        )
    return conversation


def _job(status: str, priority: str, *, finished: bool = False) -> Job:
    now = timezone.now()
    return Job.objects.create(
        handler="echo",
        status=status,
        priority=priority,
        available_at=now - dt.timedelta(minutes=5),
        rank_at=now,
        finished_at=now if finished else None,
    )


def _svg(html: str, css_class: str) -> str:
    start = html.index(f'<svg class="console-plot {css_class}"')
    return html[start : html.index("</svg>", start)]


def _links(svg: str) -> list[str]:
    return [unescape(href) for href in re.findall(r'<a href="([^"]+)"', svg)]


def _seed(operator, make_user):
    alice, bob = make_user("alice"), make_user("bob")
    _messages(alice, model="openai:gpt-4o-mini", tokens=(100, 20), cost=Decimal("0.5"), n=3)
    _messages(bob, model="local", tokens=(10, 5), cost=None)
    _messages(bob, model="local", tokens=(999, 999), cost=None, days_ago=45)  # outside
    for status, priority in [("pending", "high"), ("pending", "high"), ("scheduled", "low")]:
        _job(status, priority)
    _job("dead", "normal", finished=True)
    endpoint = Endpoint.objects.create(
        owner=operator, name="hook", url="https://hooks.example.com/in", secret="whsec_dGVzdA=="
    )
    for status in ("succeeded", "succeeded", "succeeded", "failed"):
        event = alert_raise(code="dash", message="x", owner_id=operator.pk)
        Delivery.objects.create(
            endpoint=endpoint, event=event, event_type=event.type, status=status
        )
    body = b"some notes"
    document = Document.objects.create(
        owner=alice,
        title="notes",
        filename="notes.txt",
        content_type=ContentType.TEXT,
        size=len(body),
        sha256=hashlib.sha256(body).hexdigest(),
        source=body,
        status="processed",
        processed_at=timezone.now(),
    )
    Chunk.objects.bulk_create(
        Chunk(
            document=document,
            position=i,
            content=f"chunk {i}",
            token_count=2,
            content_hash=str(i),
            embedding=[0.0] * 384,
        )
        for i in range(40)
    )
    now = timezone.now()
    Job.objects.create(
        handler="document_processing",
        args={"document_id": str(document.pk)},
        status="succeeded",
        available_at=now,
        rank_at=now,
        started_at=now - dt.timedelta(seconds=4),
        finished_at=now,
    )
    helper = Agent.objects.create(owner=None, name="Helper<b>", slug="helper")
    for reward in (1.0, 0.5):
        AgentInteraction.objects.create(agent=helper, source="conversation", feedback_reward=reward)
    return alice, helper, document


def test_the_dashboard_draws_the_databases_figures_with_links_to_the_lists_behind_them(
    admin_client, operator, make_user
):
    alice, _, _ = _seed(operator, make_user)

    html = admin_client.get("/admin/").content.decode()

    # Usage: 30 days of points, the window's totals, the 45-day-old usage left out.
    assert "8 messages · 375 tokens · $1.50" in html
    tokens = _svg(html, "usage-tokens")
    assert "tokens in: 310" in tokens and "tokens out: 65" in tokens
    assert tokens.count("<circle") == 60  # two series, a dot per day
    models = _svg(html, "usage-models")
    assert "openai:gpt-4o-mini" in models and "360 tokens · 3 replies · $1.50" in models
    users = _svg(html, "usage-users")
    assert f"/admin/conversations/conversation/?owner__id__exact={alice.pk}" in _links(users)
    # Jobs: backlog per priority and state, a dead job on today's failures line.
    backlog = _svg(html, "jobs-backlog")
    assert "2 pending · 0 scheduled · 0 running" in backlog
    assert "2 pending high job(s)" in backlog
    assert "dead: 1" in _svg(html, "jobs-failures")
    # Webhooks: 3 of the 4 finished deliveries succeeded.
    assert "75.0% of finished ones succeeded" in _svg(html, "webhooks-deliveries")
    # Knowledge: 40 chunks in 4 s of processing.
    assert "chunks/s: 10.0" in _svg(html, "knowledge-ingestion")
    assert "1 processed" in _svg(html, "knowledge-documents")
    # Agents: escaped names, the mean reward.
    feedback = _svg(html, "agents-feedback")
    assert "Helper&lt;b&gt;" in feedback and "0.75 over 2 rating(s)" in feedback
    assert "<b>" not in feedback
    assert "No experiment is running." in html
    assert "cdn" not in html.lower() and '<script src="http' not in html

    # Every link opens the admin list, filtered to the rows the figure counts.
    for href in _links(html[html.index('class="console-dashboard"') :].split("</section>")[0]):
        assert admin_client.get(href).status_code == 200, href
    by_model = admin_client.get(next(h for h in _links(models) if "gpt-4o-mini" in h))
    assert by_model.context["cl"].result_count == 3
    high_pending = next(
        h for h in _links(backlog) if "priority__exact=high&status__exact=pending" in h
    )
    assert admin_client.get(high_pending).context["cl"].result_count == 2
    today = f"created_at__gte={timezone.now().date().isoformat()}T00:00:00+00:00"
    on_today = next(h for h in _links(_svg(html, "usage-messages")) if today in unquote(h))
    assert admin_client.get(on_today).context["cl"].result_count == 8


def test_the_dashboard_costs_the_same_queries_however_much_data(admin_client, operator, make_user):
    _seed(operator, make_user)
    # A process's first request also reads what it loads once (the plugins' generation, ...).
    assert admin_client.get("/admin/").status_code == 200
    with CaptureQueriesContext(connection) as some:
        assert admin_client.get("/admin/").status_code == 200
    for n in range(5):  # more users, models, jobs and agents: more rows in every figure
        user = make_user(f"user{n}")
        _messages(user, model=f"model-{n}", tokens=(1, 1), cost=Decimal("0.01"), n=2)
        _job("pending", "low")
        _job("failed", "critical", finished=True)
        agent = Agent.objects.create(owner=None, name=f"agent {n}", slug=f"agent-{n}")
        AgentInteraction.objects.create(agent=agent, source="conversation", feedback_reward=1.0)
    with CaptureQueriesContext(connection) as more:
        assert admin_client.get("/admin/").status_code == 200

    assert len(more.captured_queries) == len(some.captured_queries)


def test_running_experiments_show_their_lift_linked_to_their_results(
    admin_client, operator, make_experiment
):
    experiment = make_experiment(operator, start=True)

    html = admin_client.get("/admin/").content.decode()

    assert html.count('<svg class="experiment-lift-plot"') == 1
    assert f"/admin/experiments/experiment/{experiment.pk}/results/" in html
    assert "1 running" in html
