"""The webhooks admin: health columns, the disabled notice, actions through the services,
adding with the secret shown once, deliveries and events read-only."""

from __future__ import annotations

import pytest
from django.test import Client

from core.events import alert_raise
from tests.webhooks.conftest import Reply, deliver_until_settled
from webhooks.models import Delivery, DeliveryStatus, Endpoint

pytestmark = pytest.mark.django_db

ENDPOINTS = "/admin/webhooks/endpoint/"
DELIVERIES = "/admin/webhooks/delivery/"


@pytest.fixture
def admin_client(staff_user) -> Client:
    client = Client()
    client.force_login(staff_user)
    return client


def test_the_list_shows_health_and_tells_of_disabled_endpoints(
    admin_client, user, make_endpoint, receiver
):
    endpoint = make_endpoint(user)
    make_endpoint(user, "/fine", name="Fine one")
    receiver.script("/hook", Reply(410))
    alert_raise(code="x", message="y", owner_id=user.pk)
    deliver_until_settled()

    page = admin_client.get(ENDPOINTS).content.decode()

    assert "disabled" in page and "healthy" in page
    assert f"Webhook endpoint &#x27;{endpoint.name}&#x27; of alice was disabled" in page
    assert "410 Gone" in page
    disabled_only = admin_client.get(ENDPOINTS, {"health": "disabled"}).content.decode()
    assert endpoint.name in disabled_only and "Fine one" not in disabled_only


def test_actions_test_rotate_disable_enable_and_redeliver(
    admin_client, user, make_endpoint, receiver
):
    endpoint = make_endpoint(user)
    old_secret = endpoint.secret
    ids = [str(endpoint.pk)]

    tested = admin_client.post(
        ENDPOINTS, {"action": "send_test", "_selected_action": ids}, follow=True
    )
    assert "Hook /hook: succeeded (HTTP 200)" in tested.content.decode()  # capfirst
    assert len(receiver.at("/hook")) == 1

    rotated = admin_client.post(
        ENDPOINTS, {"action": "rotate_secret", "_selected_action": ids}, follow=True
    )
    endpoint.refresh_from_db()
    assert endpoint.secret != old_secret and endpoint.secret in rotated.content.decode()

    admin_client.post(ENDPOINTS, {"action": "disable", "_selected_action": ids})
    endpoint.refresh_from_db()
    assert not endpoint.is_active and endpoint.disabled_reason == "Disabled by operator."
    admin_client.post(ENDPOINTS, {"action": "enable", "_selected_action": ids})
    endpoint.refresh_from_db()
    assert endpoint.is_active and endpoint.disabled_reason == ""

    Delivery.objects.filter(endpoint=endpoint).update(status=DeliveryStatus.FAILED, is_test=False)
    redelivered = admin_client.post(
        ENDPOINTS, {"action": "redeliver_failed", "_selected_action": ids}, follow=True
    )
    assert "Queued 1 failed deliveries again." in redelivered.content.decode()
    assert Delivery.objects.get().status == DeliveryStatus.PENDING


def test_adding_an_endpoint_goes_through_the_service_and_shows_the_secret_once(
    admin_client, user, receiver
):
    form = {
        "owner": user.pk,
        "name": "From the admin",
        "url": receiver.url("/admin-made"),
        "events": ["agent.created", "job.failed"],
        "headers": "{}",
        "timeout_seconds": 10,
        "scope": "own",
        "max_in_flight": 2,
        "is_active": "on",
    }
    response = admin_client.post(f"{ENDPOINTS}add/", form, follow=True)

    endpoint = Endpoint.objects.get(name="From the admin")
    assert (endpoint.events, endpoint.timeout_seconds, endpoint.max_in_flight) == (
        ["agent.created", "job.failed"],
        10,
        2,
    )
    assert endpoint.secret in response.content.decode()
    change_page = admin_client.get(f"{ENDPOINTS}{endpoint.pk}/change/").content.decode()
    assert endpoint.secret not in change_page


def test_an_inside_url_is_refused_by_the_form(admin_client, user, settings):
    settings.CHATTER_WEBHOOK_ALLOWED_HOSTS = []
    form = {
        "owner": user.pk,
        "name": "Metadata",
        "url": "http://169.254.169.254/latest/",
        "headers": "{}",
        "timeout_seconds": 10,
        "scope": "own",
        "max_in_flight": 4,
    }
    page = admin_client.post(f"{ENDPOINTS}add/", form).content.decode()

    assert "non-public address" in page
    assert not Endpoint.objects.exists()


def test_a_delivery_shows_every_attempt_and_can_be_redelivered(
    admin_client, user, make_endpoint, receiver, fast_retries
):
    make_endpoint(user)
    receiver.default = Reply(500, body=b"sorry")
    alert_raise(code="x", message="y", owner_id=user.pk)
    deliver_until_settled()
    delivery = Delivery.objects.get()

    page = admin_client.get(f"{DELIVERIES}{delivery.pk}/change/").content.decode()
    assert page.count("HTTP 500") >= 8 and "sorry" in page
    assert 'name="_save"' not in page  # read-only

    receiver.default = Reply(200)
    admin_client.post(DELIVERIES, {"action": "redeliver", "_selected_action": [str(delivery.pk)]})
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING
    listing = admin_client.get(DELIVERIES, {"status": "pending"}).content.decode()
    assert "system.alert" in listing


def test_the_event_outbox_is_listed_read_only(admin_client, user):
    event = alert_raise(code="x", message="look at me", owner_id=user.pk)

    listing = admin_client.get("/admin/core/event/").content.decode()
    page = admin_client.get(f"/admin/core/event/{event.pk}/change/").content.decode()

    assert event.pk in listing and "look at me" in page
    assert 'name="_save"' not in page
