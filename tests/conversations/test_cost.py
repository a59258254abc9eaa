"""Cost: the admin's prices override the price database; unknown is unknown, never 0."""

from __future__ import annotations

import socket
import threading
from decimal import Decimal

import pytest

from conversations.models import Conversation, ModelPrice
from conversations.pricing import catalog_cost

from .test_openai_http import stream

pytestmark = pytest.mark.django_db


def test_the_price_database_prices_known_models_offline(monkeypatch, settings):
    settings.OPENAI_BASE_URL = ""

    def no_network(*args, **kwargs):
        raise AssertionError("pricing tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)

    # gpt-4o-mini: $0.15 per million input tokens, $0.60 per million output tokens.
    cost = catalog_cost(spec="openai:gpt-4o-mini", tokens_in=1000, tokens_out=2000)

    assert cost == Decimal("0.001350")
    assert catalog_cost(spec="anthropic:claude-3-5-haiku-latest", tokens_in=1, tokens_out=1)
    assert catalog_cost(spec="openai:no-such-model-anywhere", tokens_in=1, tokens_out=1) is None
    assert not [t for t in threading.enumerate() if t.name.startswith("genai_prices")]


def test_an_openai_compatible_server_elsewhere_is_not_priced_as_openai(settings):
    settings.OPENAI_BASE_URL = "http://127.0.0.1:11434/v1"  # e.g. Ollama

    assert catalog_cost(spec="openai:gpt-4o-mini", tokens_in=1000, tokens_out=2000) is None


def test_an_unknown_price_is_unknown_in_the_reply_the_conversation_and_usage(
    api_client, send, conversation
):
    reply = send(conversation, "one two").json()["assistant_message"]

    assert reply["cost"] is None and reply["tokens_out"] == 2
    body = api_client.get(f"/api/v1/conversations/{conversation.pk}/").json()
    assert body["cost"] is None
    usage = api_client.get("/api/v1/usage/").json()
    assert usage["cost"] is None and usage["unpriced_replies"] == 1
    assert usage["by_model"] == [
        {
            "model": "instant:Fine thanks.",
            "replies": 1,
            "unpriced_replies": 1,
            "tokens_in": reply["tokens_in"],
            "tokens_out": 2,
            "cost": None,
        }
    ]


@pytest.mark.django_db(transaction=True)
def test_an_unknown_price_is_null_in_the_streams_done_event(api_client, user):
    conversation = Conversation.objects.create(owner=user, model="instant:ok")

    _status, events = stream(conversation, api_client.raw_key, "hello")

    assert events[-1][0] == "done" and events[-1][1]["usage"]["cost"] is None


def test_the_local_provider_costs_a_true_zero(api_client, send, user):
    conversation = Conversation.objects.create(owner=user, model="local")

    reply = send(conversation).json()["assistant_message"]

    assert reply["cost"] == "0.000000"
    usage = api_client.get("/api/v1/usage/").json()
    assert usage["cost"] == "0.000000" and usage["unpriced_replies"] == 0
    assert usage["by_model"][0]["cost"] == "0.000000"


def test_every_endpoint_writes_costs_with_six_decimals(api_client, send, conversation):
    assert api_client.get("/api/v1/usage/").json()["cost"] == "0.000000"  # nothing yet
    ModelPrice.objects.create(
        model="instant:Fine thanks.",
        input_per_million=Decimal("1000"),
        output_per_million=Decimal("0"),
    )

    reply = send(conversation, "one two three").json()["assistant_message"]
    usage = api_client.get("/api/v1/usage/").json()
    listed = api_client.get("/api/v1/conversations/").json()["results"][0]

    assert reply["cost"] == usage["cost"] == listed["cost"] == usage["by_model"][0]["cost"]
    assert reply["cost"] == f"{Decimal(reply['tokens_in']) * 1000 / 1_000_000:.6f}"
