"""Deliveries to a loopback receiver: signed per Standard Webhooks (checked by the
`standardwebhooks` and `svix` verifiers over the bytes received), retried, recorded."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta

import pytest
import standardwebhooks
import svix.webhooks
from django.utils import timezone

from accounts.models import AuditLog
from agents.services import agent_create, agent_update
from core.events import alert_raise
from core.models import Event
from tests.webhooks.conftest import Reply, deliver_once, deliver_until_settled
from webhooks.delivery import deliveries_claim, events_pump, leases_expire
from webhooks.models import Delivery, DeliveryAttempt, DeliveryStatus, Endpoint
from webhooks.services import endpoint_rotate_secret

pytestmark = pytest.mark.django_db


def _verify_both(secret: str, received) -> dict:
    """Both independent verifiers accept it (each raises otherwise); the parsed body."""
    standardwebhooks.Webhook(secret).verify(received.body, received.headers)
    svix.webhooks.Webhook(secret).verify(received.body, received.headers)
    return json.loads(received.body)


def test_a_delivery_is_signed_over_the_exact_bytes_and_both_verifiers_accept_it(
    user, receiver, make_endpoint
):
    endpoint = make_endpoint(user)
    agent = agent_create(actor=user, name="Helper ✓ é", slug="helper")

    deliver_until_settled()

    [received] = receiver.at("/hook")
    payload = _verify_both(endpoint.secret, received)
    event = Event.objects.get(type="agent.created")
    assert received.headers["webhook-id"] == event.pk
    assert received.headers["content-type"] == "application/json"
    assert payload == {
        "id": event.pk,
        "type": "agent.created",
        "timestamp": event.created_at.isoformat().replace("+00:00", "Z"),
        "data": {
            "id": str(agent.pk),
            "slug": "helper",
            "name": "Helper ✓ é",
            "type": "conversational",
            "model": "",
            "status": "active",
            "shared": False,
            "tools": [],
            "created_at": event.data["created_at"],
            "updated_at": event.data["updated_at"],
        },
    }
    # The signature is the spec's HMAC over "id.timestamp.body" (UTF-8 body, not ASCII-escaped).
    key = base64.b64decode(endpoint.secret.removeprefix("whsec_"))
    signed = f"{event.pk}.{received.headers['webhook-timestamp']}.".encode() + received.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert received.headers["webhook-signature"] == f"v1,{expected}"
    assert "✓".encode() in received.body
    delivery = Delivery.objects.get(endpoint=endpoint)
    assert delivery.status == DeliveryStatus.SUCCEEDED
    [attempt] = delivery.attempts.all()
    assert (attempt.number, attempt.status_code, attempt.succeeded, attempt.error) == (
        1,
        200,
        True,
        "",
    )
    assert attempt.response_excerpt == "ok"
    assert attempt.address == "127.0.0.1"


def test_a_tampered_body_or_another_secret_is_refused_by_the_verifiers(
    user, receiver, make_endpoint
):
    endpoint = make_endpoint(user)
    other = make_endpoint(user, "/other")
    agent_create(actor=user, name="Helper", slug="helper")

    deliver_until_settled()

    [received] = receiver.at("/hook")
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(endpoint.secret).verify(received.body + b" ", received.headers)
    with pytest.raises(svix.webhooks.WebhookVerificationError):
        svix.webhooks.Webhook(other.secret).verify(received.body, received.headers)


def test_during_a_rotation_both_secrets_sign_and_afterwards_only_the_new_one(
    user, receiver, make_endpoint
):
    endpoint = make_endpoint(user)
    old_secret = endpoint.secret
    rotated = endpoint_rotate_secret(endpoint=endpoint, actor=user, overlap_seconds=3600)
    assert rotated.secret != old_secret

    agent = agent_create(actor=user, name="Helper", slug="helper")
    deliver_until_settled()
    [during] = receiver.at("/hook")
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    _verify_both(old_secret, during)
    _verify_both(rotated.secret, during)

    Endpoint.objects.filter(pk=endpoint.pk).update(
        previous_secret_expires_at=timezone.now() - timedelta(seconds=1)
    )
    agent_update(agent=agent, actor=user, name="Helper 2")
    deliver_until_settled()
    after = receiver.at("/hook")[1]
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    _verify_both(rotated.secret, after)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(old_secret).verify(after.body, after.headers)


def test_a_receiver_that_fails_then_recovers_gets_every_event_each_id_accepted_once(
    user, receiver, make_endpoint, fast_retries
):
    endpoint = make_endpoint(user)
    accepted: dict[str, int] = {}
    failures = {"left": 12}

    def decide(received) -> Reply:
        # Down for the first 12 requests (500s, a 503 with Retry-After, a timeout-free 502),
        # then up; a duplicate of an id already accepted is acknowledged, not counted.
        if failures["left"] > 0:
            failures["left"] -= 1
            if failures["left"] % 3 == 0:
                return Reply(503, {"Retry-After": "0"}, b"busy")
            return Reply(500, body=b"down")
        webhook_id = received.headers["webhook-id"]
        accepted[webhook_id] = accepted.get(webhook_id, 0) + 1
        return Reply(200)

    receiver.decide = decide
    for n in range(10):
        alert_raise(code="test_alert", message=f"alert {n}", owner_id=user.pk)

    deliver_until_settled(concurrency=4)

    event_ids = set(Event.objects.filter(type="system.alert").values_list("pk", flat=True))
    assert len(event_ids) == 10
    assert set(accepted) == event_ids
    assert all(count == 1 for count in accepted.values())
    assert set(Delivery.objects.filter(endpoint=endpoint).values_list("status", flat=True)) == {
        DeliveryStatus.SUCCEEDED
    }
    # Every attempt was stored, the failed ones with their status codes.
    attempts = DeliveryAttempt.objects.filter(delivery__endpoint=endpoint)
    assert attempts.count() == 10 + 12
    assert sorted(set(attempts.values_list("status_code", flat=True))) == [200, 500, 503]
    # The same webhook-id on every attempt of a delivery.
    ids_per_delivery: dict[str, set[str]] = {}
    for got in receiver.at("/hook"):
        body = json.loads(got.body)
        ids_per_delivery.setdefault(body["id"], set()).add(got.headers["webhook-id"])
    assert all(ids == {event_id} for event_id, ids in ids_per_delivery.items())
    endpoint.refresh_from_db()
    assert (endpoint.consecutive_failures, endpoint.failing_since) == (0, None)


def test_a_429_with_retry_after_waits_what_it_asks(user, receiver, make_endpoint):
    make_endpoint(user)
    receiver.script("/hook", Reply(429, {"Retry-After": "120"}))
    alert_raise(code="test_alert", message="once", owner_id=user.pk)

    deliver_once()

    delivery = Delivery.objects.get()
    assert delivery.status == DeliveryStatus.PENDING
    assert delivery.last_status_code == 429
    wait = (delivery.next_attempt_at - delivery.last_attempt_at).total_seconds()
    assert 119 <= wait <= 121


def test_a_redirect_is_not_followed_and_fails_the_attempt(user, receiver, make_endpoint):
    make_endpoint(user)
    receiver.script("/hook", Reply(302, {"Location": receiver.url("/elsewhere")}))
    alert_raise(code="test_alert", message="once", owner_id=user.pk)

    deliver_once()

    assert receiver.at("/elsewhere") == []
    delivery = Delivery.objects.get()
    assert delivery.status == DeliveryStatus.PENDING  # retried later
    assert delivery.retry_step == 1
    assert "redirects are not followed" in delivery.last_error


def test_a_410_disables_the_endpoint_and_fails_what_it_had_pending(user, receiver, make_endpoint):
    endpoint = make_endpoint(user)
    watcher = make_endpoint(user, "/watcher", events=["system.alert"])
    receiver.script("/hook", Reply(410, body=b"gone"))
    alert_raise(code="first", message="one", owner_id=user.pk)

    deliver_until_settled()

    endpoint.refresh_from_db()
    assert not endpoint.is_active
    assert "410" in endpoint.disabled_reason
    assert AuditLog.objects.filter(
        action="webhook.endpoint_disabled", target_id=str(endpoint.pk)
    ).exists()
    alert = Event.objects.get(type="system.alert", data__code="webhook_endpoint_disabled")
    assert alert.owner_id == user.pk
    assert alert.data["details"]["endpoint_id"] == str(endpoint.pk)
    # The alert went to the owner's other endpoint, never to the one it is about.
    assert Delivery.objects.filter(event=alert, endpoint=watcher).exists()
    assert not Delivery.objects.filter(event=alert, endpoint=endpoint).exists()
    # Nothing more is sent to it.
    alert_raise(code="second", message="two", owner_id=user.pk)
    deliver_until_settled()
    assert len(receiver.at("/hook")) == 1


def test_the_last_failed_attempt_fails_the_delivery_and_raises_an_alert(
    user, receiver, make_endpoint, fast_retries
):
    endpoint = make_endpoint(user)
    receiver.default = Reply(500, body=b"broken")
    alert_raise(code="original", message="to deliver", owner_id=user.pk, level="warning")
    agent_create(actor=user, name="Helper", slug="helper")

    deliver_until_settled()

    delivery = Delivery.objects.get(endpoint=endpoint, event_type="agent.created")
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.attempt_count == len(fast_retries) == delivery.attempts.count()
    assert [a.number for a in delivery.attempts.all()] == list(range(1, len(fast_retries) + 1))
    alert = Event.objects.get(type="system.alert", data__code="webhook_delivery_failed")
    assert alert.data["details"] == {
        "endpoint_id": str(endpoint.pk),
        "delivery_id": str(delivery.pk),
        "event_id": delivery.event_id,
        "event_type": "agent.created",
        "attempts": len(fast_retries),
        "last_error": "HTTP 500",
    }
    # The alert that could not be delivered raised none of its own.
    assert Event.objects.filter(data__code="webhook_delivery_failed").count() == 1


def test_an_endpoint_failing_for_five_days_is_disabled(user, receiver, make_endpoint):
    endpoint = make_endpoint(user)
    Endpoint.objects.filter(pk=endpoint.pk).update(
        failing_since=timezone.now() - timedelta(days=5, minutes=1), consecutive_failures=40
    )
    receiver.default = Reply(500)
    alert_raise(code="x", message="y", owner_id=user.pk)

    deliver_once()

    endpoint.refresh_from_db()
    assert not endpoint.is_active
    assert endpoint.consecutive_failures == 41
    assert "5 days" in endpoint.disabled_reason
    assert Delivery.objects.get().status == DeliveryStatus.FAILED


def test_a_lost_worker_costs_one_recorded_attempt_and_nothing_else(
    user, receiver, make_endpoint, fast_retries
):
    make_endpoint(user)
    alert_raise(code="x", message="y", owner_id=user.pk)
    events_pump()
    [claimed] = deliveries_claim(limit=10)  # a worker took it ... and died before sending
    Delivery.objects.filter(pk=claimed.delivery_id).update(
        lease_until=timezone.now() - timedelta(seconds=1)
    )

    assert leases_expire() == 1
    deliver_until_settled()

    delivery = Delivery.objects.get()
    assert delivery.status == DeliveryStatus.SUCCEEDED
    lost, sent = delivery.attempts.all()
    assert (lost.number, lost.status_code, "lease expired" in lost.error) == (1, None, True)
    assert (sent.number, sent.status_code) == (2, 200)
    assert len(receiver.at("/hook")) == 1
