"""The event registry and outbox: every event type is emitted by the real code path, in the
transaction of the change (a rollback emits nothing), and reaches the endpoints that want it."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from jsonschema import Draft202012Validator

import bench.providers  # noqa: F401  (the instant: test model)
import tests.jobs.handlers  # noqa: F401  (test.permanent)
from agents.services import agent_create, agent_update
from core.events import (
    EventInvalid,
    event_emit,
    event_type_get,
    event_types,
    events_dispatch,
    subscriber_register,
)
from core.models import Event
from jobs import worker
from jobs.services import enqueue
from tests.webhooks.conftest import deliver_until_settled
from webhooks.models import Delivery

pytestmark = pytest.mark.django_db

ISSUE_TYPES = {
    "conversation.started",
    "conversation.ended",
    "message.received",
    "message.sent",
    "document.uploaded",
    "document.processed",
    "document.failed",
    "user.registered",
    "user.updated",
    "agent.created",
    "agent.updated",
    "job.completed",
    "job.failed",
    "system.alert",
}


def _events(type: str) -> list[Event]:
    events = list(Event.objects.filter(type=type).order_by("created_at"))
    schema = event_type_get(type).schema
    for event in events:  # what was stored is what the event type's schema promises
        Draft202012Validator(schema).validate(event.data)
    return events


def test_every_event_type_is_registered_with_a_valid_schema():
    names = {spec.name for spec in event_types()}
    assert names >= ISSUE_TYPES
    for spec in event_types():
        Draft202012Validator.check_schema(spec.schema)
        assert spec.description


def test_a_rollback_emits_nothing(user):
    with pytest.raises(RuntimeError), transaction.atomic():
        agent_create(actor=user, name="Doomed", slug="doomed")
        assert Event.objects.filter(type="agent.created").count() == 1
        raise RuntimeError("the change fails after the emit")

    assert not Event.objects.filter(type="agent.created").exists()


def test_a_payload_off_its_schema_fails_the_emit_and_its_transaction(user):
    with pytest.raises(EventInvalid, match="level"):
        event_emit(
            type="system.alert", data={"level": "meh", "code": "x", "message": "m", "details": {}}
        )
    with pytest.raises(EventInvalid, match="unknown event type"):
        event_emit(type="nothing.happened", data={})


def test_users_are_registered_and_updated_but_a_sign_in_is_not_an_update(make_user):
    user = make_user("carol")
    [registered] = _events("user.registered")
    assert registered.owner_id == user.pk
    assert registered.data["username"] == "carol" and registered.data["id"] == user.pk

    user.last_login = user.date_joined
    user.save(update_fields=["last_login"])
    assert _events("user.updated") == []

    user.email = "carol@example.com"
    user.save(update_fields=["email"])
    user.first_name = "Carol"
    user.save()
    first, second = _events("user.updated")
    assert (first.data["fields"], first.data["email"]) == (["email"], "carol@example.com")
    assert (second.data["fields"], second.data["first_name"]) == (None, "Carol")


def test_agents_are_created_and_updated(user):
    agent = agent_create(actor=user, name="Helper", slug="helper")
    agent_update(agent=agent, actor=user, system_prompt="Be brief.", status="inactive")

    [created] = _events("agent.created")
    [updated] = _events("agent.updated")
    assert created.owner_id == user.pk and created.data["id"] == str(agent.pk)
    assert updated.data["fields"] == ["status", "system_prompt"]
    assert updated.data["status"] == "inactive"


def test_a_conversation_starts_receives_and_sends_messages_and_ends(api_client, user):
    created = api_client.post(
        "/api/v1/conversations/", {"title": "Hi", "model": "instant:Fine thanks."}, format="json"
    )
    conversation_id = created.json()["id"]
    sent = api_client.post(
        f"/api/v1/conversations/{conversation_id}/messages/",
        {"content": "How are you?"},
        format="json",
    )
    assert sent.status_code == 201, sent.content
    forked = api_client.post(f"/api/v1/conversations/{conversation_id}/fork/", format="json")
    assert forked.status_code == 201, forked.content
    assert api_client.delete(f"/api/v1/conversations/{conversation_id}/").status_code == 204

    started, fork = _events("conversation.started")
    assert started.data["id"] == conversation_id and started.owner_id == user.pk
    assert fork.data["forked_from_id"] == conversation_id
    [received] = _events("message.received")
    [reply] = _events("message.sent")
    messages = sent.json()
    assert received.data == {
        "id": messages["user_message"]["id"],
        "conversation_id": conversation_id,
        "position": 0,
        "role": "user",
        "content": "How are you?",
        "created_at": received.data["created_at"],
    }
    assert reply.data["id"] == messages["assistant_message"]["id"]
    assert (reply.data["content"], reply.data["status"], reply.data["position"]) == (
        "Fine thanks. ",
        "complete",
        1,
    )
    assert reply.data["tokens_out"] == messages["assistant_message"]["tokens_out"]
    [ended] = _events("conversation.ended")
    assert (ended.data["id"], ended.data["reason"], ended.data["message_count"]) == (
        conversation_id,
        "deleted",
        2,
    )


class _FakeEmbedder:
    space = "test:fake"

    def embed_documents(self, texts):
        return np.ones((len(texts), 384), dtype=np.float32)

    def embed_query(self, text):
        return np.ones(384, dtype=np.float32)

    def count_tokens(self, texts):
        return [len(text.split()) for text in texts]


class _BrokenEmbedder(_FakeEmbedder):
    def embed_documents(self, texts):
        raise RuntimeError("the embedding server is down")


def _upload(client, name: str, body: bytes):
    return client.post(
        "/api/v1/documents/", {"file": SimpleUploadedFile(name, body)}, format="multipart"
    )


def test_documents_are_uploaded_then_processed_or_failed(api_client, user, settings, monkeypatch):
    settings.KNOWLEDGE_PROCESS_INLINE = True
    monkeypatch.setattr("knowledge.services.active_embedder", lambda: _FakeEmbedder())
    good = _upload(api_client, "notes.txt", b"Balloons float because helium is light.")
    monkeypatch.setattr("knowledge.services.active_embedder", lambda: _BrokenEmbedder())
    bad = _upload(api_client, "other.txt", b"Kites fly because of the wind.")
    assert (good.status_code, bad.status_code) == (202, 202)

    uploaded = _events("document.uploaded")
    assert [e.data["filename"] for e in uploaded] == ["notes.txt", "other.txt"]
    assert {e.owner_id for e in uploaded} == {user.pk}
    [processed] = _events("document.processed")
    assert processed.data["id"] == good.json()["id"]
    assert (processed.data["chunk_count"], processed.data["embedding_space"]) == (1, "test:fake")
    [failed] = _events("document.failed")
    assert failed.data["id"] == bad.json()["id"]
    assert "the embedding server is down" in failed.data["failure_reason"]


@pytest.mark.django_db(transaction=True)
def test_a_job_that_ends_is_an_event_written_with_its_outcome(user):
    done = enqueue("echo", args={"n": 1}, owner=user)
    broken = enqueue("test.permanent", owner=user)
    try:
        assert worker.run_next_job() == "succeeded"
        assert worker.run_next_job() == "failed"
    finally:
        worker.executor_connection_close()

    [completed] = _events("job.completed")
    [failed] = _events("job.failed")
    assert completed.owner_id == user.pk
    assert (completed.data["id"], completed.data["handler"], completed.data["status"]) == (
        done.pk,
        "echo",
        "succeeded",
    )
    assert (failed.data["id"], failed.data["status"]) == (broken.pk, "failed")
    assert "can never work" in failed.data["error"]


def test_an_event_reaches_only_the_endpoints_that_want_it(
    user, other_user, staff_user, make_endpoint, receiver
):
    mine = make_endpoint(user, "/mine")
    only_alerts = make_endpoint(user, "/alerts", events=["system.alert"])
    theirs = make_endpoint(other_user, "/theirs")
    everyone = make_endpoint(staff_user, "/staff", scope="all")
    staff_own = make_endpoint(staff_user, "/staff-own")

    agent_create(actor=user, name="Helper", slug="helper")
    deliver_until_settled()

    got = {
        path: {r.headers["webhook-id"] for r in receiver.at(path)}
        for path in ("/mine", "/alerts", "/theirs", "/staff", "/staff-own")
    }
    [event] = Event.objects.filter(type="agent.created")
    assert got == {
        "/mine": {event.pk},
        "/alerts": set(),
        "/theirs": set(),
        "/staff": {event.pk},
        "/staff-own": set(),
    }
    assert Delivery.objects.filter(event=event).count() == 2
    for endpoint in (only_alerts, theirs, staff_own):
        assert not Delivery.objects.filter(endpoint=endpoint).exists()
    assert {mine.pk, everyone.pk} == set(
        Delivery.objects.filter(event=event).values_list("endpoint_id", flat=True)
    )


def test_a_subscriber_that_fails_holds_back_only_the_event_it_fails_on(user):
    seen: list[str] = []

    def picky(events):
        for event in events:
            if event.data.get("message") == "poison":
                raise ValueError("cannot take this one")
            seen.append(event.data["message"])

    subscriber_register("test.picky", picky)
    try:
        for message in ("one", "poison", "two"):
            event_emit(
                type="system.alert",
                data={"level": "warning", "code": "t", "message": message, "details": {}},
            )
        assert events_dispatch() == 2
        assert seen == ["one", "two"]
        poison = Event.objects.get(data__message="poison")
        assert poison.dispatched_at is None
        assert (poison.dispatch_attempts, "cannot take this one" in poison.dispatch_error) == (
            1,
            True,
        )
        for _ in range(4):
            events_dispatch()
        poison.refresh_from_db()
        assert poison.dispatch_attempts == 5 and poison.dispatched_at is not None  # given up
    finally:
        from core import events

        events._subscribers.pop("test.picky", None)


@pytest.mark.django_db(transaction=True)
def test_the_waker_asks_for_active_endpoints_once_a_second_and_at_once_after_a_change(
    user, make_endpoint, monkeypatch
):
    """Two commits a chat turn wake the deliverer: with no endpoint, a turn stream must not
    pay a query for each. An endpoint this process creates is seen by the next commit."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from jobs.models import Job
    from webhooks.services import wake
    from webhooks.services.wake import DELIVER_HANDLER, endpoints_changed

    monkeypatch.setattr(wake, "ACTIVE_ENDPOINTS_TTL_SECONDS", 3600)  # no clock in the test
    endpoints_changed()
    with CaptureQueriesContext(connection) as queries:
        for name in ("one", "two", "three"):
            agent_create(actor=user, name=name, slug=name)
    asked = [q["sql"] for q in queries if "webhooks_endpoint" in q["sql"]]
    assert len(asked) == 1
    assert not Job.objects.filter(handler=DELIVER_HANDLER).exists()

    make_endpoint(user, "/new")
    agent_create(actor=user, name="four", slug="four")

    assert Job.objects.filter(handler=DELIVER_HANDLER).exists()
