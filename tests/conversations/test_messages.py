from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from conversations.models import Conversation, Message, ModelPrice
from conversations.providers import NO_MODEL_TEXT, register_provider

pytestmark = pytest.mark.django_db


def test_sending_returns_the_stored_user_message_and_the_reply(send, conversation):
    response = send(conversation, "How are you?")

    assert response.status_code == 201
    body = response.json()
    user, reply = body["user_message"], body["assistant_message"]
    assert (user["role"], user["content"], user["status"], user["position"]) == (
        "user",
        "How are you?",
        "complete",
        0,
    )
    assert (reply["role"], reply["content"], reply["status"], reply["position"]) == (
        "assistant",
        "Fine thanks. ",
        "complete",
        1,
    )
    assert reply["tokens_in"] > 0 and reply["tokens_out"] == 2 and reply["latency_ms"] >= 0
    for key in ("id", "created_at", "model"):
        assert key in reply
    conversation.refresh_from_db()
    assert conversation.message_count == 2 and conversation.title == "How are you?"


def test_messages_are_listed_in_order(api_client, send, conversation):
    send(conversation, "one")
    send(conversation, "two")

    body = api_client.get(f"/api/v1/conversations/{conversation.pk}/messages/").json()

    assert body["count"] == 4
    assert [(m["role"], m["position"]) for m in body["results"]] == [
        ("user", 0),
        ("assistant", 1),
        ("user", 2),
        ("assistant", 3),
    ]


def test_the_local_provider_says_no_model_is_configured(send, user):
    conversation = Conversation.objects.create(owner=user, model="local")

    reply = send(conversation).json()["assistant_message"]

    assert reply["content"] == NO_MODEL_TEXT
    assert reply["model"] == "local"


@pytest.mark.parametrize("content", ["", "   ", None])
def test_blank_content_is_a_400(send, conversation, content):
    response = send(conversation, content)

    assert response.status_code == 400
    assert "content" in response.json()["error"]["details"]
    assert not Message.objects.exists()


def test_too_long_content_is_a_400(send, conversation, settings):
    response = send(conversation, "x" * (settings.CHATTER_MAX_MESSAGE_CHARS + 1))

    assert response.status_code == 400
    assert not Message.objects.exists()


def test_a_second_message_during_a_running_reply_is_a_409(send, conversation):
    Conversation.objects.filter(pk=conversation.pk).update(turn_started_at=timezone.now())

    response = send(conversation)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "turn_in_progress"
    assert not Message.objects.exists()


def test_a_stale_claim_from_a_dead_process_is_taken_over(send, conversation, settings):
    stale = timezone.now() - timedelta(seconds=settings.CHATTER_TURN_STALE_SECONDS + 5)
    Conversation.objects.filter(pk=conversation.pk).update(turn_started_at=stale)

    assert send(conversation).status_code == 201
    conversation.refresh_from_db()
    assert conversation.turn_started_at is None


def test_a_failing_provider_keeps_the_user_message_and_records_the_error(send, user):
    class Boom(Exception):
        status_code = 500

    def broken(model, options):
        from bench.providers import ScriptedChatModel

        class Failing(ScriptedChatModel):
            def _generate(self, *args, **kwargs):
                raise Boom("upstream exploded")

        return Failing(tokens=["x"])

    register_provider("broken", broken)
    conversation = Conversation.objects.create(owner=user, model="broken:x")

    response = send(conversation, "Still there?")

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "provider_error"
    user_message, reply = conversation.messages.order_by("position")
    assert user_message.content == "Still there?" and user_message.status == "complete"
    assert reply.status == "error" and "upstream exploded" in reply.error
    conversation.refresh_from_db()
    assert conversation.turn_started_at is None  # the conversation is usable again


def test_tokens_and_cost_roll_up_from_the_price_table(api_client, send, conversation):
    ModelPrice.objects.create(
        model="instant:Fine thanks.",
        input_per_million=Decimal("1000"),
        output_per_million=Decimal("2000"),
    )

    reply = send(conversation, "one two three").json()["assistant_message"]

    expected = (
        Decimal(reply["tokens_in"]) * 1000 + Decimal(reply["tokens_out"]) * 2000
    ) / 1_000_000
    assert Decimal(reply["cost"]) == expected
    send(conversation, "again")
    conversation.refresh_from_db()
    assert conversation.tokens_out == 4
    assert conversation.cost == sum(m.cost for m in conversation.messages.all())
    usage = api_client.get("/api/v1/usage/").json()
    assert usage["tokens_out"] == 4 and Decimal(usage["cost"]) == conversation.cost
    assert (
        usage["by_model"][0]["model"] == "instant:Fine thanks."
        and usage["by_model"][0]["replies"] == 2
    )


def test_feedback_on_a_reply_is_stored_and_others_cannot_rate_it(
    api_client, other_client, send, conversation
):
    reply_id = send(conversation).json()["assistant_message"]["id"]

    foreign = other_client.post(
        f"/api/v1/messages/{reply_id}/feedback/",
        {"scale": "thumbs", "rating": -1},
        format="json",
    )
    rated = api_client.post(
        f"/api/v1/messages/{reply_id}/feedback/",
        {"scale": "stars", "rating": 5, "comment": "great"},
        format="json",
    )
    out_of_range = api_client.post(
        f"/api/v1/messages/{reply_id}/feedback/", {"scale": "stars", "rating": 9}, format="json"
    )

    assert foreign.status_code == 404
    assert rated.status_code == 200
    assert rated.json()["feedback"]["scale"] == "stars"
    assert rated.json()["feedback"]["rating"] == 5
    assert out_of_range.status_code == 400
    assert Message.objects.get(pk=reply_id).feedback_comment == "great"


@pytest.mark.parametrize(("scale", "meaning"), [("thumbs", "thumbs"), ("stars", "stars")])
def test_a_rating_of_1_says_which_scale_it_is_on(api_client, send, conversation, scale, meaning):
    reply_id = send(conversation).json()["assistant_message"]["id"]

    rated = api_client.post(
        f"/api/v1/messages/{reply_id}/feedback/", {"scale": scale, "rating": 1}, format="json"
    )

    assert rated.json()["feedback"]["scale"] == meaning
    assert Message.objects.get(pk=reply_id).feedback_scale == meaning


@pytest.mark.parametrize(("rating", "scale"), [(-1, "thumbs"), (0, "thumbs"), (4, "stars")])
def test_a_rating_that_can_mean_one_scale_only_needs_no_scale(
    api_client, send, conversation, rating, scale
):
    reply_id = send(conversation).json()["assistant_message"]["id"]

    rated = api_client.post(
        f"/api/v1/messages/{reply_id}/feedback/", {"rating": rating}, format="json"
    )

    assert rated.status_code == 200
    assert rated.json()["feedback"]["scale"] == scale
    assert Message.objects.get(pk=reply_id).feedback_rating == rating


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rating": 1}, "scale"),  # ambiguous: a thumbs-up or one star
        ({"scale": "thumbs", "rating": 5}, "rating"),
        ({"scale": "stars", "rating": -1}, "rating"),
        ({"scale": "stars", "rating": "5"}, "rating"),
        ({"scale": "stars", "rating": True}, "rating"),
        ({"scale": "stars", "rating": 4, "comment": 0}, "comment"),
    ],
)
def test_ambiguous_or_mistyped_feedback_is_a_400_naming_the_field(
    api_client, send, conversation, body, field
):
    reply_id = send(conversation).json()["assistant_message"]["id"]

    response = api_client.post(f"/api/v1/messages/{reply_id}/feedback/", body, format="json")

    assert response.status_code == 400
    assert field in response.json()["error"]["details"]
    assert Message.objects.get(pk=reply_id).feedback_rating is None


def test_feedback_on_a_users_message_is_a_404_saying_why(api_client, send, conversation):
    user_message_id = send(conversation).json()["user_message"]["id"]

    response = api_client.post(
        f"/api/v1/messages/{user_message_id}/feedback/",
        {"scale": "thumbs", "rating": 1},
        format="json",
    )

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_a_reply"


@pytest.mark.django_db(transaction=True)
def test_when_a_turn_is_answered_everything_it_wrote_is_on_disk(send, conversation, monkeypatch):
    """The claim and the checkpoints commit without waiting for the disk; the reply's commit
    waits, and flushes the WAL up to it. So when the 201 is sent, the WAL is on disk at
    least up to where the reply's commit began (read just before it). The WAL is the whole
    server's: the other test worker's asynchronous commits may be unflushed at any moment,
    so the check is against this turn's own position, not the current insert position."""
    from conversations.services import turns

    before_finish: list[str] = []
    finish = turns.turn_finish

    def recording(**kwargs):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_current_wal_insert_lsn()::text")
            before_finish.append(cursor.fetchone()[0])
        return finish(**kwargs)

    monkeypatch.setattr(turns, "turn_finish", recording)
    for attempt in range(3):
        assert send(conversation, f"Hello {attempt}").status_code == 201
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn", [before_finish[-1]])
            assert cursor.fetchone()[0], f"attempt {attempt}: the reply's WAL is not flushed"
    assert len(before_finish) == 3
