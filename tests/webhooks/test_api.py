"""The webhooks API through real URLs: endpoints, the secret shown once, test sends,
rotation, deliveries and redeliveries, event types; others' ids are 404s."""

from __future__ import annotations

import pytest
import standardwebhooks

from core.events import alert_raise
from tests.webhooks.conftest import Reply, deliver_until_settled
from webhooks.models import Delivery, DeliveryStatus, Endpoint

pytestmark = pytest.mark.django_db

BASE = "/api/v1/webhooks"


def _create(client, receiver, path: str = "/hook", **fields):
    body = {"name": "Mine", "url": receiver.url(path), **fields}
    return client.post(f"{BASE}/endpoints/", body, format="json")


def test_creating_an_endpoint_shows_its_secret_once(api_client, receiver):
    created = _create(api_client, receiver, events=["agent.created", "system.alert"])

    assert created.status_code == 201, created.content
    body = created.json()
    assert body["secret"].startswith("whsec_")
    assert (body["events"], body["timeout"], body["scope"], body["is_active"]) == (
        ["agent.created", "system.alert"],
        15,
        "own",
        True,
    )
    detail = api_client.get(f"{BASE}/endpoints/{body['id']}/").json()
    assert "secret" not in detail
    listed = api_client.get(f"{BASE}/endpoints/").json()
    assert listed["count"] == 1 and "secret" not in listed["results"][0]
    assert Endpoint.objects.get().secret == body["secret"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"url": "http://127.0.0.1:9/nope"}, "url"),  # loopback, another port than the allowed one
        ({"url": "http://169.254.169.254/latest/"}, "url"),
        ({"url": "ftp://example.com/"}, "url"),
        ({"events": ["no.such_event"]}, "events"),
        ({"events": ["webhook.test"]}, "events"),
        ({"headers": {"webhook-signature": "forged"}}, "headers"),
        ({"headers": {"Bad Name": "x"}}, "headers"),
        ({"headers": {"X-Ok": "line\r\nbreak"}}, "headers"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": 61}, "timeout"),
        ({"timeout": "5"}, "timeout"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_bad_endpoint_is_a_400_naming_the_field(api_client, receiver, settings, fields, field):
    settings.CHATTER_WEBHOOK_ALLOWED_HOSTS = [f"127.0.0.1:{receiver.port}"]
    body = {"name": "Bad", "url": receiver.url(), **fields}
    response = api_client.post(f"{BASE}/endpoints/", body, format="json")

    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["details"]
    assert not Endpoint.objects.exists()


def test_only_staff_may_receive_every_users_events(api_client, staff_client, receiver):
    refused = _create(api_client, receiver, scope="all")
    allowed = _create(staff_client, receiver, scope="all")

    assert refused.status_code == 403
    assert allowed.status_code == 201 and allowed.json()["scope"] == "all"


def test_others_endpoints_and_deliveries_are_404s(api_client, other_client, user, receiver):
    endpoint_id = _create(api_client, receiver).json()["id"]
    alert_raise(code="x", message="y", owner_id=user.pk)
    deliver_until_settled()
    delivery_id = str(Delivery.objects.get().pk)

    for method, url in [
        ("get", f"{BASE}/endpoints/{endpoint_id}/"),
        ("patch", f"{BASE}/endpoints/{endpoint_id}/"),
        ("delete", f"{BASE}/endpoints/{endpoint_id}/"),
        ("post", f"{BASE}/endpoints/{endpoint_id}/test/"),
        ("post", f"{BASE}/endpoints/{endpoint_id}/rotate-secret/"),
        ("post", f"{BASE}/endpoints/{endpoint_id}/redeliver-failed/"),
        ("get", f"{BASE}/deliveries/{delivery_id}/"),
        ("post", f"{BASE}/deliveries/{delivery_id}/redeliver/"),
    ]:
        response = getattr(other_client, method)(url, {}, format="json")
        assert response.status_code == 404, (method, url, response.content)
    assert other_client.get(f"{BASE}/endpoints/").json()["count"] == 0
    assert other_client.get(f"{BASE}/deliveries/").json()["count"] == 0
    assert Endpoint.objects.filter(pk=endpoint_id).exists()


def test_a_test_send_answers_with_its_attempt(api_client, receiver):
    body = _create(api_client, receiver).json()
    receiver.script("/hook", Reply(500, body=b"not today"))

    failed = api_client.post(f"{BASE}/endpoints/{body['id']}/test/", format="json")
    ok = api_client.post(f"{BASE}/endpoints/{body['id']}/test/", format="json")

    assert failed.status_code == ok.status_code == 200
    failed_body = failed.json()
    assert (failed_body["status"], failed_body["event_type"], failed_body["is_test"]) == (
        "failed",
        "webhook.test",
        True,
    )
    [attempt] = failed_body["attempts"]
    assert (attempt["status_code"], attempt["response_excerpt"], attempt["error"]) == (
        500,
        "not today",
        "HTTP 500",
    )
    assert ok.json()["status"] == "succeeded"
    received = receiver.at("/hook")[1]
    payload = standardwebhooks.Webhook(body["secret"]).verify(received.body, received.headers)
    assert payload["type"] == "webhook.test"
    assert payload["data"]["endpoint_id"] == body["id"]
    # A test's failure is not the endpoint's: its health is untouched.
    assert Endpoint.objects.get().consecutive_failures == 0


def test_rotating_the_secret_shows_the_new_one_and_signs_with_both(api_client, receiver):
    body = _create(api_client, receiver).json()
    rotated = api_client.post(
        f"{BASE}/endpoints/{body['id']}/rotate-secret/", {"overlap_seconds": 600}, format="json"
    )

    assert rotated.status_code == 200
    new_secret = rotated.json()["secret"]
    assert new_secret != body["secret"] and rotated.json()["previous_secret_expires_at"]
    api_client.post(f"{BASE}/endpoints/{body['id']}/test/", format="json")
    [received] = receiver.at("/hook")
    for secret in (body["secret"], new_secret):
        standardwebhooks.Webhook(secret).verify(received.body, received.headers)


def test_deliveries_are_listed_filtered_and_redelivered(api_client, user, receiver, fast_retries):
    endpoint_id = _create(api_client, receiver).json()["id"]
    receiver.default = Reply(500)
    alert_raise(code="first", message="one", owner_id=user.pk)
    alert_raise(code="second", message="two", owner_id=user.pk)
    deliver_until_settled()

    listed = api_client.get(f"{BASE}/deliveries/", {"status": "failed", "endpoint": endpoint_id})
    assert listed.status_code == 200 and listed.json()["count"] == 2
    first = listed.json()["results"][0]
    assert first["event"]["type"] == "system.alert" and first["attempt_count"] == 8
    detail = api_client.get(f"{BASE}/deliveries/{first['id']}/").json()
    assert [a["number"] for a in detail["attempts"]] == list(range(1, 9))
    assert api_client.get(f"{BASE}/deliveries/", {"status": "lost"}).status_code == 400

    receiver.default = Reply(200)
    redelivered = api_client.post(f"{BASE}/deliveries/{first['id']}/redeliver/", format="json")
    assert redelivered.status_code == 200 and redelivered.json()["status"] == "pending"
    again = api_client.post(f"{BASE}/deliveries/{first['id']}/redeliver/", format="json")
    assert again.status_code == 409
    deliver_until_settled()
    assert Delivery.objects.get(pk=first["id"]).status == DeliveryStatus.SUCCEEDED

    rest = api_client.post(f"{BASE}/endpoints/{endpoint_id}/redeliver-failed/", format="json")
    assert rest.json() == {"redelivered": 1}
    deliver_until_settled()
    assert set(Delivery.objects.values_list("status", flat=True)) == {DeliveryStatus.SUCCEEDED}
    # The same webhook-id on the redelivery as on the failed attempts before it.
    ids = {r.headers["webhook-id"] for r in receiver.at("/hook")}
    assert len(ids) == 2


def test_a_disabled_endpoint_is_enabled_again_by_its_owner(api_client, user, receiver):
    body = _create(api_client, receiver).json()
    receiver.script("/hook", Reply(410))
    alert_raise(code="x", message="y", owner_id=user.pk)
    deliver_until_settled()

    disabled = api_client.get(f"{BASE}/endpoints/{body['id']}/").json()
    assert disabled["is_active"] is False and "410" in disabled["disabled_reason"]
    refused = api_client.post(f"{BASE}/endpoints/{body['id']}/redeliver-failed/", format="json")
    assert refused.status_code == 409

    enabled = api_client.patch(
        f"{BASE}/endpoints/{body['id']}/", {"is_active": True}, format="json"
    )
    assert enabled.status_code == 200
    assert (enabled.json()["is_active"], enabled.json()["disabled_reason"]) == (True, "")
    assert api_client.post(
        f"{BASE}/endpoints/{body['id']}/redeliver-failed/", format="json"
    ).json() == {"redelivered": 1}
    deliver_until_settled()
    assert Delivery.objects.get().status == DeliveryStatus.SUCCEEDED


def test_an_endpoint_is_changed_and_deleted(api_client, receiver):
    body = _create(api_client, receiver).json()
    changed = api_client.patch(
        f"{BASE}/endpoints/{body['id']}/",
        {"name": "Renamed", "events": ["job.failed"], "headers": {"X-Team": "ops"}, "timeout": 5},
        format="json",
    )
    assert changed.status_code == 200, changed.content
    assert {k: changed.json()[k] for k in ("name", "events", "headers", "timeout")} == {
        "name": "Renamed",
        "events": ["job.failed"],
        "headers": {"X-Team": "ops"},
        "timeout": 5,
    }
    assert api_client.delete(f"{BASE}/endpoints/{body['id']}/").status_code == 204
    assert not Endpoint.objects.exists()


def test_custom_headers_are_sent(api_client, receiver):
    body = _create(
        api_client, receiver, headers={"X-Team": "ops", "Authorization": "Bearer t"}
    ).json()
    api_client.post(f"{BASE}/endpoints/{body['id']}/test/", format="json")
    [received] = receiver.at("/hook")
    assert (received.headers["x-team"], received.headers["authorization"]) == ("ops", "Bearer t")


def test_event_types_are_listed_with_their_schemas(api_client):
    response = api_client.get(f"{BASE}/event-types/")

    assert response.status_code == 200
    types = {item["name"]: item for item in response.json()}
    assert {"conversation.started", "message.sent", "job.failed", "system.alert"} <= set(types)
    assert types["webhook.test"]["subscribable"] is False
    assert types["document.processed"]["schema"]["properties"]["chunk_count"] == {
        "type": "integer",
        "minimum": 0,
    }
