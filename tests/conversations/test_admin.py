from __future__ import annotations

import pytest
from django.test import Client

from conversations.checkpointer import get_checkpointer, thread_config
from conversations.models import Conversation

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(make_user) -> Client:
    make_user("root", staff=True, password="pw")
    client = Client()
    client.login(username="root", password="pw")
    return client


def test_the_change_page_shows_the_family_tree_summary_and_messages(
    admin_client, api_client, send, user
):
    root = Conversation.objects.create(
        owner=user, title="Root talk", model="instant:ok", memory_window=2
    )
    for text in ["a", "b", "c"]:
        send(root, text)
    point = root.messages.get(position=1)
    api_client.post(
        f"/api/v1/conversations/{root.pk}/branch/", {"message_id": str(point.pk)}, format="json"
    )
    api_client.post(f"/api/v1/conversations/{root.pk}/fork/")
    root.refresh_from_db()

    page = admin_client.get(f"/admin/conversations/conversation/{root.pk}/change/").content.decode()

    assert "<strong>Root talk</strong>" in page
    assert "Root talk (branch)" in page and "(branch, 2 messages)" in page
    assert "Root talk (fork)" in page and "(fork, 6 messages)" in page
    assert root.summary and root.summary[:30] in page


def test_the_delete_action_drops_checkpoints_too(admin_client, send, user):
    conversation = Conversation.objects.create(owner=user, model="instant:ok")
    send(conversation)

    response = admin_client.post(
        "/admin/conversations/conversation/",
        {"action": "delete_with_checkpoints", "_selected_action": [str(conversation.pk)]},
        follow=True,
    )

    assert "Deleted 1 conversation(s)." in response.content.decode()
    assert get_checkpointer().get_tuple(thread_config(str(conversation.pk))) is None


def test_prices_are_editable_in_the_admin(admin_client):
    response = admin_client.post(
        "/admin/conversations/modelprice/add/",
        {
            "model": "openai:gpt-4o-mini",
            "input_per_million": "0.15",
            "output_per_million": "0.60",
            "currency": "USD",
        },
    )

    assert response.status_code == 302
    from conversations.models import ModelPrice

    assert str(ModelPrice.objects.get(model="openai:gpt-4o-mini").output_per_million) == "0.600000"


def test_the_users_list_shows_each_users_tokens_and_cost(admin_client, user, send):
    from decimal import Decimal

    from conversations.models import ModelPrice

    ModelPrice.objects.create(
        model="instant:ok", input_per_million=Decimal("1000"), output_per_million=Decimal("0")
    )
    conversation = Conversation.objects.create(owner=user, model="instant:ok")
    send(conversation, "one two three")
    conversation.refresh_from_db()

    page = admin_client.get("/admin/accounts/user/").content.decode()

    assert (
        f'<td class="field-tokens">{conversation.tokens_in + conversation.tokens_out}</td>' in page
    )
    assert f"{conversation.cost}" in page and conversation.cost > 0


def test_the_search_finds_a_conversation_by_a_word_in_its_messages(admin_client, user):
    found = Conversation.objects.create(owner=user, title="Unrelated title")
    found.messages.create(position=0, role="user", content="How do pelicans migrate?")
    other = Conversation.objects.create(owner=user, title="Another one")
    other.messages.create(position=0, role="user", content="Nothing about birds here")

    page = admin_client.get("/admin/conversations/conversation/", {"q": "pelicans"})

    assert page.status_code == 200
    assert list(page.context["cl"].result_list) == [found]
    # The title fields still match as before.
    titled = admin_client.get("/admin/conversations/conversation/", {"q": "Another"})
    assert list(titled.context["cl"].result_list) == [other]
