"""One API, one behaviour: both send endpoints validate with one rule and word their errors
identically; strings are strings and numbers numbers in every conversation field; the
schema declares what is accepted."""

from __future__ import annotations

import asyncio
import json

import pytest
from django.test import AsyncClient

from conversations.models import Conversation, Message

pytestmark = pytest.mark.django_db(transaction=True)

TOO_LONG = "TOO_LONG"


def send_json(api_client, conversation, body):
    response = api_client.post(
        f"/api/v1/conversations/{conversation.pk}/messages/", body, format="json"
    )
    return response.status_code, response.json()


def send_stream(api_client, conversation, body):
    async def go():
        response = await AsyncClient().post(
            f"/api/v1/conversations/{conversation.pk}/messages/stream/",
            json.dumps(body),
            content_type="application/json",
            headers={"Authorization": f"Bearer {api_client.raw_key}"},
        )
        assert not response.streaming, "an invalid message started a turn"
        return response.status_code, response.json()

    return asyncio.run(go())


@pytest.mark.parametrize(
    "body",
    [
        {"content": 123},
        {"content": 0},
        {"content": 1.5},
        {"content": True},
        {"content": None},
        {"content": ["hi"]},
        {"content": {"text": "hi"}},
        {"content": ""},
        {"content": "   "},
        {"content": TOO_LONG},
        {},
        ["hi"],
    ],
)
def test_both_send_endpoints_refuse_the_same_bodies_in_the_same_words(
    api_client, user, settings, body
):
    if isinstance(body, dict) and body.get("content") == TOO_LONG:
        body = {"content": "x" * (settings.CHATTER_MAX_MESSAGE_CHARS + 1)}
    conversation = Conversation.objects.create(owner=user, model="instant:ok")

    as_json = send_json(api_client, conversation, body)
    as_stream = send_stream(api_client, conversation, body)

    assert as_json[0] == 400
    assert as_json == as_stream
    assert as_json[1]["error"]["code"] == "validation_error"
    assert not Message.objects.filter(conversation=conversation).exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("title", 123),
        ("model", 7),
        ("system_prompt", 0),
        ("temperature", "0.5"),
        ("max_tokens", "100"),
        ("memory_window", True),
    ],
)
def test_conversation_fields_take_their_declared_json_type_only(api_client, field, value):
    response = api_client.post("/api/v1/conversations/", {field: value}, format="json")

    assert response.status_code == 400
    assert field in response.json()["error"]["details"]
    assert not Conversation.objects.exists()


def test_conversations_take_json_only_as_the_schema_says(api_client):
    schema = api_client.get("/api/schema/?format=json").json()
    create = schema["paths"]["/api/v1/conversations/"]["post"]["requestBody"]["content"]
    send = schema["paths"]["/api/v1/conversations/{id}/messages/"]["post"]["requestBody"]

    response = api_client.post("/api/v1/conversations/", {"memory_window": ""}, format="multipart")

    assert list(create) == ["application/json"]
    assert list(send["content"]) == ["application/json"]
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"
