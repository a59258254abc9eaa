"""GET agents/{id}/metrics/: aggregates over the agent's interactions, checked against
numbers computed by hand from the rows the test makes."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone

from agents.models import Agent, AgentInteraction, AgentVariant, AgentVariantChoice
from agents.services import interaction_record

pytestmark = pytest.mark.django_db


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _row(agent, *, variant=None, ago=dt.timedelta(hours=1), feedback=None, confidence=None, **kw):
    choice = None
    if variant is not None:
        choice = AgentVariantChoice.objects.create(
            agent=agent, variant=variant, sample=0.5, samples={variant.name: 0.5}
        )
    interaction = interaction_record(agent=agent, source="conversation", choice=choice, **kw)
    AgentInteraction.objects.filter(pk=interaction.pk).update(
        created_at=timezone.now() - ago, feedback_reward=feedback, confidence=confidence
    )
    return interaction


def _calls(n: int) -> list[dict[str, Any]]:
    return [
        {"id": f"c{i}", "name": "calculator", "args": {"expression": "1+1"}, "result": "2"}
        for i in range(n)
    ]


@pytest.fixture
def agent(user) -> Agent:
    agent = Agent.objects.create(owner=user, created_by=user, name="Helper", slug="helper")
    a = AgentVariant.objects.create(agent=agent, name="a", alpha=3, beta=1, feedback_count=2)
    b = AgentVariant.objects.create(agent=agent, name="b", alpha=1, beta=2, feedback_count=1)
    mini, big = "openai:gpt-4o-mini", "openai:gpt-4o"
    _row(
        agent,
        variant=a,
        latency_ms=100,
        tokens_in=10,
        tokens_out=20,
        tool_calls=_calls(2),
        model_used=mini,
        feedback=0.5,
        confidence=0.8,
    )
    _row(
        agent, variant=a, latency_ms=200, tokens_in=30, tokens_out=40, model_used=mini, feedback=1.0
    )
    _row(
        agent,
        variant=b,
        latency_ms=300,
        tokens_in=50,
        tokens_out=60,
        tool_calls=_calls(1),
        model_used=big,
        feedback=0.0,
        confidence=0.4,
    )
    _row(agent, latency_ms=400, model_used=mini, error="timeout")
    _row(agent, latency_ms=1000, model_used="local", error="boom")
    # Outside the default window (7 days), inside 30 days.
    _row(agent, variant=b, ago=dt.timedelta(days=10), latency_ms=5000, model_used=big, feedback=1.0)
    # Another agent's reply is never counted.
    other = Agent.objects.create(owner=user, created_by=user, name="Other", slug="other")
    _row(other, latency_ms=1, model_used=mini)
    return agent


def _block(replies, errors, latency, tokens, feedback, tools, confidence):
    return {
        "replies": replies,
        "errors": errors,
        "error_rate": errors / replies if replies else None,
        "latency_ms": dict(zip(("p50", "p95", "mean", "measured"), latency, strict=True)),
        "tokens": dict(zip(("mean_in", "mean_out", "mean_total"), tokens, strict=True)),
        "feedback": dict(zip(("count", "mean"), feedback, strict=True)),
        "tool_calls": dict(
            zip(("replies_with_calls", "rate", "mean_per_reply"), tools, strict=True)
        ),
        "confidence": dict(zip(("count", "mean"), confidence, strict=True)),
    }


def test_the_metrics_are_the_hand_computed_aggregates_of_the_window(api_client, agent):
    response = api_client.get(f"/api/v1/agents/{agent.pk}/metrics/")

    assert response.status_code == 200, response.json()
    body = response.json()
    since = dt.datetime.fromisoformat(body.pop("since"))
    until = dt.datetime.fromisoformat(body.pop("until"))
    assert until - since == dt.timedelta(days=7)
    variants = {v["name"]: v for v in body.pop("variants")}
    assert _rounded(body) == {
        # latencies 100, 200, 300, 400, 1000: p50 300; p95 = 400 + 0.8 * (1000 - 400)
        **_block(5, 2, (300, 880, 400, 5), (18, 24, 42), (3, 0.5), (2, 0.4, 0.6), (2, 0.6)),
        "models": [
            {"model": "openai:gpt-4o-mini", "replies": 3},
            {"model": "local", "replies": 1},
            {"model": "openai:gpt-4o", "replies": 1},
        ],
    }
    a = variants["a"]
    assert _rounded({k: a.pop(k) for k in ("alpha", "beta", "posterior_mean", "active")}) == {
        "alpha": 3.0,
        "beta": 1.0,
        "posterior_mean": 0.75,
        "active": True,
    }
    a.pop("id")
    # latencies 100, 200: p95 = 100 + 0.95 * 100
    assert _rounded({k: v for k, v in a.items() if k != "name"}) == _block(
        2, 0, (150, 195, 150, 2), (20, 30, 50), (2, 0.75), (1, 0.5, 1.0), (1, 0.8)
    )
    b = variants["b"]
    for key in ("id", "name", "active", "alpha", "beta", "posterior_mean"):
        b.pop(key)
    assert _rounded(b) == _block(
        1, 0, (300, 300, 300, 1), (50, 60, 110), (1, 0.0), (1, 1.0, 1.0), (1, 0.4)
    )


def test_a_wider_window_takes_the_older_reply(api_client, agent):
    body = api_client.get(f"/api/v1/agents/{agent.pk}/metrics/?window=30d").json()

    assert body["replies"] == 6
    assert body["feedback"] == {"count": 4, "mean": 0.625}
    assert {v["name"]: v["replies"] for v in body["variants"]} == {"a": 2, "b": 2}


def test_since_and_until_bound_the_window(api_client, agent):
    now = timezone.now()
    since = (now - dt.timedelta(days=11)).isoformat()
    until = (now - dt.timedelta(days=9)).isoformat()

    response = api_client.get(
        f"/api/v1/agents/{agent.pk}/metrics/", {"since": since, "until": until}
    )

    body = response.json()
    assert response.status_code == 200, body
    assert body["replies"] == 1
    assert body["latency_ms"] == {"p50": 5000.0, "p95": 5000.0, "mean": 5000.0, "measured": 1}
    assert body["models"] == [{"model": "openai:gpt-4o", "replies": 1}]


def test_a_window_with_no_replies_has_no_rates(api_client, user):
    agent = Agent.objects.create(owner=user, created_by=user, name="New", slug="new")

    body = api_client.get(f"/api/v1/agents/{agent.pk}/metrics/?window=24h").json()

    assert body["replies"] == 0
    assert body["error_rate"] is None and body["tool_calls"]["rate"] is None
    assert body["latency_ms"] == {"p50": None, "p95": None, "mean": None, "measured": 0}
    assert body["feedback"] == {"count": 0, "mean": None}
    assert body["models"] == [] and body["variants"] == []


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ({"window": "7w"}, {"window"}),
        ({"window": "0d"}, {"window"}),
        ({"window": "367d"}, {"window"}),
        ({"window": "8785h"}, {"window"}),
        ({"window": "-1d"}, {"window"}),
        ({"window": ""}, {"window"}),
        ({"since": ""}, {"since"}),
        ({"since": "yesterday"}, {"since"}),
        ({"until": "2026-13-01T00:00:00Z"}, {"until"}),
        ({"since": "2026-12-02T00:00:00Z", "until": "2026-12-01T00:00:00Z"}, {"since"}),
        ({"since": "2026-12-01T00:00:00Z", "window": "7d"}, {"window", "since"}),
        ({"until": "0001-01-02T00:00:00Z"}, {"until"}),
        ({"windw": "7d"}, {"windw"}),
    ],
)
def test_bad_windows_are_a_400_naming_the_parameter(api_client, agent, query, fields):
    response = api_client.get(f"/api/v1/agents/{agent.pk}/metrics/", query)

    assert response.status_code == 400, response.json()
    assert set(response.json()["error"]["details"]) == fields


def test_another_users_private_agent_has_no_metrics_for_you(other_client, agent):
    response = other_client.get(f"/api/v1/agents/{agent.pk}/metrics/")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_a_shared_agents_metrics_are_visible_to_its_users(api_client, staff_user):
    shared = Agent.objects.create(owner=None, created_by=staff_user, name="Desk", slug="desk")
    _row(shared, latency_ms=50, model_used="local")

    body = api_client.get(f"/api/v1/agents/{shared.pk}/metrics/").json()

    assert body["replies"] == 1
