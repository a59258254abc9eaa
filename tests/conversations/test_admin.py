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


def _change_form(conversation: Conversation, **changes: object) -> dict[str, object]:
    """The admin change form as the page posts it, with `changes` applied."""
    data: dict[str, object] = {
        "title": conversation.title,
        "model": conversation.model,
        "temperature": "" if conversation.temperature is None else conversation.temperature,
        "max_tokens": "" if conversation.max_tokens is None else conversation.max_tokens,
        "system_prompt": conversation.system_prompt,
        "memory_window": "" if conversation.memory_window is None else conversation.memory_window,
        "relevance_floor": "",
        "metadata": "{}",
        "messages-TOTAL_FORMS": "0",
        "messages-INITIAL_FORMS": "0",
        "messages-MIN_NUM_FORMS": "0",
        "messages-MAX_NUM_FORMS": "1000",
    }
    return {**data, **changes}


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("temperature", "2.5", "Ensure this value is less than or equal to 2."),
        ("max_tokens", "0", "Ensure this value is greater than or equal to 1."),
        ("memory_window", "1", "Ensure this value is greater than or equal to 2."),
        ("relevance_floor", "1.5", "Ensure this value is less than or equal to 1."),
    ],
)
def test_the_change_form_refuses_what_the_api_refuses(
    admin_client, api_client, user, field, value, error
):
    conversation = Conversation.objects.create(owner=user, title="Tuned", temperature=0.5)
    url = f"/admin/conversations/conversation/{conversation.pk}/change/"

    response = admin_client.post(url, _change_form(conversation, **{field: value}))

    assert response.status_code == 200  # the form again, not a redirect
    assert error in response.content.decode()
    conversation.refresh_from_db()
    assert conversation.temperature == 0.5 and getattr(conversation, field) != float(value)
    as_json = int(value) if field in ("max_tokens", "memory_window") else float(value)
    api = api_client.patch(
        f"/api/v1/conversations/{conversation.pk}/", {field: as_json}, format="json"
    )
    assert api.status_code == 400
    assert api.json()["error"]["details"] == {field: [error]}


def test_the_change_form_refuses_an_unknown_model_provider(admin_client, user):
    conversation = Conversation.objects.create(owner=user, title="Tuned")
    url = f"/admin/conversations/conversation/{conversation.pk}/change/"

    response = admin_client.post(url, _change_form(conversation, model="nosuch:model"))

    assert response.status_code == 200
    assert "Known providers:" in response.content.decode()
    conversation.refresh_from_db()
    assert conversation.model == ""


def test_the_change_form_saves_settings_in_range(admin_client, user):
    conversation = Conversation.objects.create(owner=user, title="Tuned")
    url = f"/admin/conversations/conversation/{conversation.pk}/change/"

    response = admin_client.post(
        url, _change_form(conversation, temperature="1.5", model="instant:ok", max_tokens="64")
    )

    assert response.status_code == 302
    conversation.refresh_from_db()
    assert (conversation.temperature, conversation.model, conversation.max_tokens) == (
        1.5,
        "instant:ok",
        64,
    )
