from __future__ import annotations

import pytest

from conversations.checkpointer import get_checkpointer, thread_config
from conversations.models import Conversation

pytestmark = pytest.mark.django_db


def test_create_returns_201_with_the_settings(api_client):
    response = api_client.post(
        "/api/v1/conversations/",
        {
            "title": "Trip",
            "model": "local",
            "temperature": 0.2,
            "max_tokens": 300,
            "system_prompt": "Be brief.",
        },
        format="json",
    )

    assert response.status_code == 201
    body = response.json()
    assert body["title"] == "Trip" and body["model"] == "local"
    assert body["temperature"] == 0.2 and body["max_tokens"] == 300
    assert body["message_count"] == 0 and body["cost"] == "0.000000"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model", "nosuch:thing"),
        ("temperature", 3),
        ("max_tokens", 0),
        ("memory_window", 1),
        ("metadata", [1]),
    ],
)
def test_bad_settings_are_a_400_naming_the_field(api_client, field, value):
    response = api_client.post("/api/v1/conversations/", {field: value}, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert field in error["details"]


def test_users_see_only_their_own_conversations(api_client, other_client, user, other_user):
    mine = Conversation.objects.create(owner=user, title="mine")
    theirs = Conversation.objects.create(owner=other_user, title="theirs")

    listed = [c["id"] for c in api_client.get("/api/v1/conversations/").json()["results"]]

    assert listed == [str(mine.pk)]
    for method, suffix in [
        ("get", ""),
        ("patch", ""),
        ("delete", ""),
        ("get", "messages/"),
        ("post", "fork/"),
    ]:
        response = getattr(api_client, method)(
            f"/api/v1/conversations/{theirs.pk}/{suffix}", {}, format="json"
        )
        assert response.status_code == 404, (method, suffix)
    assert Conversation.objects.filter(pk=theirs.pk).exists()


def test_staff_see_everyones_conversations(staff_client, user, other_user):
    Conversation.objects.create(owner=user)
    Conversation.objects.create(owner=other_user)

    assert staff_client.get("/api/v1/conversations/").json()["count"] == 2


def test_update_changes_settings(api_client, conversation):
    response = api_client.patch(
        f"/api/v1/conversations/{conversation.pk}/",
        {"system_prompt": "Pirate voice.", "title": "New"},
        format="json",
    )

    assert response.status_code == 200
    conversation.refresh_from_db()
    assert conversation.system_prompt == "Pirate voice." and conversation.title == "New"


def test_delete_removes_messages_and_checkpoints(api_client, conversation, send):
    send(conversation)
    assert get_checkpointer().get_tuple(thread_config(str(conversation.pk))) is not None

    response = api_client.delete(f"/api/v1/conversations/{conversation.pk}/")

    assert response.status_code == 204
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert get_checkpointer().get_tuple(thread_config(str(conversation.pk))) is None


def test_search_finds_titles_and_message_text(api_client, user, send):
    paris = Conversation.objects.create(owner=user, title="Weekend in Paris", model="instant:ok")
    cooking = Conversation.objects.create(owner=user, title="Dinner", model="instant:ok")
    send(cooking, "How long should I braise lamb shoulders?")

    def search(q: str) -> set[str]:
        return {
            c["id"] for c in api_client.get("/api/v1/conversations/", {"q": q}).json()["results"]
        }

    assert search("paris") == {str(paris.pk)}
    assert search("braising lamb") == {str(cooking.pk)}  # stemmed: braise/braising
    assert search("submarine") == set()


def test_search_never_reaches_other_users(api_client, other_user):
    Conversation.objects.create(owner=other_user, title="Secret Paris plan")

    assert api_client.get("/api/v1/conversations/", {"q": "paris"}).json()["count"] == 0
