"""langchain-openai's real HTTP path against an OpenAI-compatible server on loopback."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest
from django.test import AsyncClient

from conversations.models import Conversation, Message, ModelPrice

pytestmark = pytest.mark.django_db


@pytest.fixture
def gpt(user) -> Conversation:
    return Conversation.objects.create(
        owner=user,
        model="openai:test-model",
        system_prompt="You are terse.",
        temperature=0.3,
        max_tokens=77,
    )


def test_a_turn_goes_over_http_with_the_conversations_settings(send, gpt, openai_server):
    ModelPrice.objects.create(
        model="test-model", input_per_million=Decimal("2"), output_per_million=Decimal("8")
    )

    reply = send(gpt, "Hi!").json()["assistant_message"]

    request = openai_server.requests[-1]
    assert request["model"] == "test-model" and request["temperature"] == 0.3
    assert request.get("max_tokens", request.get("max_completion_tokens")) == 77
    assert request["messages"][0] == {"role": "system", "content": "You are terse."}
    assert request["messages"][-1] == {"role": "user", "content": "Hi!"}
    assert request["_authorization"] == "Bearer sk-test"
    assert reply["content"] == openai_server.reply
    assert (reply["tokens_in"], reply["tokens_out"]) == (4, 6)  # as the server reported
    assert Decimal(reply["cost"]) == (Decimal(4) * 2 + Decimal(6) * 8) / 1_000_000


def test_the_second_turn_sends_the_history(send, gpt, openai_server):
    send(gpt, "first")
    send(gpt, "second")

    roles = [(m["role"], m["content"]) for m in openai_server.requests[-1]["messages"]]
    assert roles == [
        ("system", "You are terse."),
        ("user", "first"),
        ("assistant", openai_server.reply),
        ("user", "second"),
    ]


@pytest.mark.parametrize(
    ("upstream", "status", "code"),
    [
        (429, 503, "provider_rate_limited"),
        (500, 502, "provider_error"),
        (503, 502, "provider_error"),
        (401, 502, "provider_auth_failed"),
        (400, 502, "provider_rejected"),
    ],
)
def test_provider_errors_become_502_or_503_and_nothing_is_lost(
    send, gpt, openai_server, upstream, status, code
):
    openai_server.fail_with = upstream

    response = send(gpt, "Are you there?")

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    user_message, reply = Message.objects.filter(conversation=gpt).order_by("position")
    assert user_message.content == "Are you there?"
    assert reply.status == "error" and reply.error


def test_a_provider_timeout_is_a_503(send, gpt, openai_server):
    openai_server.hang = True

    response = send(gpt)

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "provider_timeout"
    assert Message.objects.get(conversation=gpt, role="assistant").status == "error"


def stream(conversation, raw_key: str, content: str) -> tuple[int, list[tuple[str, dict]]]:
    async def go():
        response = await AsyncClient().post(
            f"/api/v1/conversations/{conversation.pk}/messages/stream/",
            {"content": content},
            content_type="application/json",
            headers={"Authorization": f"Bearer {raw_key}"},
        )
        if not response.streaming:
            return response.status_code, [("response", response.json())]
        text = "".join([chunk.decode() async for chunk in response.streaming_content])
        events = []
        for block in text.strip().split("\n\n"):
            lines = dict(line.split(": ", 1) for line in block.splitlines())
            events.append((lines["event"], json.loads(lines["data"])))
        return response.status_code, events

    return asyncio.run(go())


@pytest.mark.django_db(transaction=True)
def test_streaming_over_http_yields_deltas_then_the_stored_ids_and_usage(
    api_client, user, openai_server
):
    gpt = Conversation.objects.create(owner=user, model="openai:test-model")

    status, events = stream(gpt, api_client.raw_key, "Stream please")

    assert status == 200
    assert openai_server.requests[-1]["stream"] is True
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("delta") == 6
    assert (
        "".join(data["content"] for kind, data in events if kind == "delta")
        == openai_server.reply + " "
    )
    done = events[-1][1]
    reply = Message.objects.get(pk=done["assistant_message_id"])
    assert reply.status == "complete" and reply.content.strip() == openai_server.reply
    assert done["usage"]["tokens_in"] == reply.tokens_in == 2
    assert done["usage"]["tokens_out"] == reply.tokens_out == 6
    assert Message.objects.get(pk=done["user_message_id"]).content == "Stream please"


@pytest.mark.django_db(transaction=True)
def test_a_provider_failure_mid_stream_is_an_error_event(api_client, user, openai_server):
    gpt = Conversation.objects.create(owner=user, model="openai:test-model")
    openai_server.fail_with = 429

    status, events = stream(gpt, api_client.raw_key, "hello")

    assert status == 200
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["code"] == "provider_rate_limited"
    assert Message.objects.get(conversation=gpt, role="assistant").status == "error"
    assert Message.objects.get(conversation=gpt, role="user").content == "hello"


@pytest.mark.django_db(transaction=True)
def test_streaming_into_a_busy_conversation_is_a_409_envelope(api_client, user):
    from django.utils import timezone

    busy = Conversation.objects.create(
        owner=user, model="instant:x", turn_started_at=timezone.now()
    )

    status, events = stream(busy, api_client.raw_key, "hello")

    assert status == 409
    assert events[0][1]["error"]["code"] == "turn_in_progress"


@pytest.mark.django_db(transaction=True)
def test_streaming_into_another_users_conversation_is_a_404(other_client, user):
    theirs = Conversation.objects.create(owner=user, model="instant:x")

    status, _events = stream(theirs, other_client.raw_key, "hello")

    assert status == 404
    assert not Message.objects.filter(conversation=theirs).exists()


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.django_db(transaction=True)
def test_replies_of_the_local_provider_are_not_shown_to_a_real_model_as_its_own(
    api_client, user, openai_server, streamed
):
    conversation = Conversation.objects.create(owner=user, model="local")
    assert (
        api_client.post(
            f"/api/v1/conversations/{conversation.pk}/messages/",
            {"content": "first"},
            format="json",
        ).status_code
        == 201
    )
    api_client.patch(
        f"/api/v1/conversations/{conversation.pk}/", {"model": "openai:test-model"}, format="json"
    )

    if streamed:
        status, events = stream(conversation, api_client.raw_key, "second")
        assert (status, events[-1][0]) == (200, "done")
    else:
        assert (
            api_client.post(
                f"/api/v1/conversations/{conversation.pk}/messages/",
                {"content": "second"},
                format="json",
            ).status_code
            == 201
        )

    # The record keeps the local reply; the model's context does not claim it was the model's.
    assert conversation.messages.filter(role="assistant", model="local").exists()
    sent = [(m["role"], m["content"]) for m in openai_server.requests[-1]["messages"]]
    assert sent == [("user", "first"), ("user", "second")]
