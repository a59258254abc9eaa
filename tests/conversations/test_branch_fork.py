"""Branch and fork, asserted on the Message rows and on the checkpointed LangGraph state."""

from __future__ import annotations

import pytest

from conversations.checkpointer import thread_config
from conversations.graph import get_graph
from conversations.models import Conversation
from conversations.providers import register_provider

pytestmark = pytest.mark.django_db


def state_of(conversation) -> dict:
    return get_graph().get_state(thread_config(str(conversation.pk))).values


def contents(messages) -> list[str]:
    return [str(m.content).strip() for m in messages]


@pytest.fixture
def chat(user, send) -> Conversation:
    conversation = Conversation.objects.create(owner=user, model="instant:Noted.")
    for text in ["one", "two", "three"]:
        assert send(conversation, text).status_code == 201
    return conversation


def branch(api_client, conversation, message_id):
    return api_client.post(
        f"/api/v1/conversations/{conversation.pk}/branch/",
        {"message_id": str(message_id)},
        format="json",
    )


def test_a_branch_at_a_reply_has_the_history_up_to_and_including_it(user, send, api_client):
    chat = Conversation.objects.create(owner=user, model="instant:Noted.")
    for text in ["one", "two"]:
        send(chat, text)
    # The shared prefix must not call the model again.
    Conversation.objects.filter(pk=chat.pk).update(model="broken-if-called:x")
    point = chat.messages.get(position=1)  # the reply to "one"

    response = branch(api_client, chat, point.pk)

    assert response.status_code == 201
    body = response.json()
    assert body["parent"] == str(chat.pk) and body["branch_point"] == str(point.pk)
    copy = Conversation.objects.get(pk=body["id"])
    assert [(m.role, m.content.strip()) for m in copy.messages.order_by("position")] == [
        ("user", "one"),
        ("assistant", "Noted."),
    ]
    assert contents(state_of(copy)["messages"]) == ["one", "Noted."]
    assert [m.id for m in state_of(copy)["messages"]] == [
        str(m.pk) for m in copy.messages.order_by("position")
    ]


@pytest.mark.parametrize("edited", [None, "two, edited"])
def test_a_branch_at_a_user_message_resends_it_and_gets_it_answered(api_client, chat, edited):
    point = chat.messages.get(position=2)  # the user's "two"
    body = {"message_id": str(point.pk)}
    if edited is not None:
        body["content"] = edited

    response = api_client.post(f"/api/v1/conversations/{chat.pk}/branch/", body, format="json")

    assert response.status_code == 201
    copy = Conversation.objects.get(pk=response.json()["id"])
    sent = edited or "two"
    assert [(m.role, m.content.strip(), m.status) for m in copy.messages.order_by("position")] == [
        ("user", "one", "complete"),
        ("assistant", "Noted.", "complete"),
        ("user", sent, "complete"),
        ("assistant", "Noted.", "complete"),
    ]
    assert contents(state_of(copy)["messages"]) == ["one", "Noted.", sent, "Noted."]
    assert response.json()["message_count"] == 4
    assert copy.branch_point_id == point.pk


def test_a_branch_at_the_first_message_starts_empty_and_resends_it(api_client, chat):
    first = chat.messages.get(position=0)

    response = branch(api_client, chat, first.pk)

    copy = Conversation.objects.get(pk=response.json()["id"])
    assert contents(state_of(copy)["messages"]) == ["one", "Noted."]
    assert [m.role for m in copy.messages.order_by("position")] == ["user", "assistant"]


def test_content_is_refused_when_branching_at_a_reply(api_client, chat):
    response = api_client.post(
        f"/api/v1/conversations/{chat.pk}/branch/",
        {"message_id": str(chat.messages.get(position=1).pk), "content": "edited"},
        format="json",
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_a_user_message"
    assert "content" in response.json()["error"]["details"]
    assert Conversation.objects.count() == 1


def test_a_fork_copies_a_conversation_whose_last_turn_failed(api_client, user, send):
    class Boom(Exception):
        status_code = 500

    def broken(model, options):
        from bench.providers import ScriptedChatModel

        class Failing(ScriptedChatModel):
            def _generate(self, *args, **kwargs):
                raise Boom("upstream exploded")

        return Failing(tokens=["x"])

    register_provider("broken", broken)
    chat = Conversation.objects.create(owner=user, model="instant:Noted.")
    send(chat, "one")
    Conversation.objects.filter(pk=chat.pk).update(model="broken:x")
    assert send(chat, "two").status_code == 502

    response = api_client.post(f"/api/v1/conversations/{chat.pk}/fork/")

    assert response.status_code == 201, response.json()
    fork = Conversation.objects.get(pk=response.json()["id"])
    assert [(m.role, m.status) for m in fork.messages.order_by("position")] == [
        ("user", "complete"),
        ("assistant", "complete"),
        ("user", "complete"),
        ("assistant", "error"),
    ]
    # The context has the unanswered question; the next turn in the fork goes on from it.
    assert contents(state_of(fork)["messages"]) == ["one", "Noted.", "two"]
    Conversation.objects.filter(pk=fork.pk).update(model="instant:Noted.")
    assert send(fork, "three").status_code == 201
    assert contents(state_of(fork)["messages"])[-2:] == ["three", "Noted."]


def test_branch_and_parent_continue_independently(api_client, send, chat):
    point = chat.messages.get(position=3)  # the reply to "two"
    copy = Conversation.objects.get(pk=branch(api_client, chat, point.pk).json()["id"])

    assert send(copy, "branch only").status_code == 201
    assert send(chat, "parent only").status_code == 201

    assert contents(state_of(copy)["messages"]) == [
        "one",
        "Noted.",
        "two",
        "Noted.",
        "branch only",
        "Noted.",
    ]
    assert contents(state_of(chat)["messages"])[-2:] == ["parent only", "Noted."]
    assert "branch only" not in contents(state_of(chat)["messages"])
    assert copy.messages.count() == 6 and chat.messages.count() == 8


def test_a_branch_of_a_branch_works_from_a_copied_message(api_client, send, chat):
    first = Conversation.objects.get(
        pk=branch(api_client, chat, chat.messages.get(position=3).pk).json()["id"]
    )
    copied_point = first.messages.get(position=1)

    response = branch(api_client, first, copied_point.pk)

    assert response.status_code == 201
    second = Conversation.objects.get(pk=response.json()["id"])
    assert contents(state_of(second)["messages"]) == ["one", "Noted."]
    assert [m.id for m in state_of(second)["messages"]] == [
        str(m.pk) for m in second.messages.order_by("position")
    ]
    assert send(second, "deeper").status_code == 201


def test_branching_from_another_conversations_message_is_refused(api_client, user, chat, send):
    other = Conversation.objects.create(owner=user, model="instant:x")
    send(other)

    response = branch(api_client, chat, other.messages.first().pk)

    assert response.status_code == 404
    assert response.json()["error"]["details"] == {"message_id": ["Not found."]}


def test_branching_someone_elses_conversation_is_a_404(other_client, chat):
    response = branch(other_client, chat, chat.messages.first().pk)

    assert response.status_code == 404
    assert Conversation.objects.count() == 1


def test_a_fork_is_an_independent_full_copy(api_client, send, chat):
    response = api_client.post(f"/api/v1/conversations/{chat.pk}/fork/")

    assert response.status_code == 201
    fork = Conversation.objects.get(pk=response.json()["id"])
    chat.refresh_from_db()
    assert fork.forked_from_id == chat.pk and fork.parent_id is None
    assert [m.content for m in fork.messages.order_by("position")] == [
        m.content for m in chat.messages.order_by("position")
    ]
    assert contents(state_of(fork)["messages"]) == contents(state_of(chat)["messages"])
    assert fork.tokens_out == chat.tokens_out == 3 and fork.message_count == 6

    send(fork, "only in the fork")
    assert "only in the fork" not in contents(state_of(chat)["messages"])
    assert chat.messages.count() == 6
