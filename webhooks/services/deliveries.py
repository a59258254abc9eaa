"""Deliveries: made from events (the registry's subscriber), redelivered, pruned."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import User
from accounts.services import log_action
from core.errors import Conflict
from core.models import Event, event_id_floor
from webhooks.models import Delivery, DeliveryStatus, Endpoint
from webhooks.services.wake import webhooks_wake


def delivery_redeliver(*, delivery: Delivery, actor: User | None = None) -> Delivery:
    """Send a finished delivery again (same event, same ``webhook-id``), on a fresh retry
    schedule. 409 while it is still pending or sending, or its endpoint is disabled."""
    if not Endpoint.objects.filter(pk=delivery.endpoint_id, is_active=True).exists():
        raise Conflict(
            "The endpoint is disabled; enable it (is_active: true) to redeliver.",
            code="endpoint_disabled",
        )
    now = timezone.now()
    updated = Delivery.objects.filter(
        pk=delivery.pk, status__in=[DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED]
    ).update(
        status=DeliveryStatus.PENDING,
        retry_step=0,
        next_attempt_at=now,
        lease_until=None,
        updated_at=now,
    )
    delivery.refresh_from_db()
    if not updated:
        raise Conflict(
            f"The delivery is {delivery.status}: it will be attempted anyway.",
            code="delivery_in_progress",
            details={"status": delivery.status},
        )
    if actor is not None:
        log_action(actor=actor, action="webhook.redelivered", target=delivery)
    transaction.on_commit(webhooks_wake)
    return delivery


def deliveries_redeliver_failed(*, endpoint: Endpoint, actor: User | None = None) -> int:
    """Redeliver every failed delivery of the endpoint (not test sends); returns how many."""
    if not Endpoint.objects.filter(pk=endpoint.pk, is_active=True).exists():
        raise Conflict(
            "The endpoint is disabled; enable it (is_active: true) to redeliver.",
            code="endpoint_disabled",
        )
    now = timezone.now()
    count = Delivery.objects.filter(
        endpoint=endpoint, status=DeliveryStatus.FAILED, is_test=False
    ).update(
        status=DeliveryStatus.PENDING,
        retry_step=0,
        next_attempt_at=now,
        lease_until=None,
        updated_at=now,
    )
    if count:
        log_action(
            actor=actor,
            action="webhook.redelivered_failed",
            target=endpoint,
            details={"count": count},
        )
        transaction.on_commit(webhooks_wake)
    return count


# --- from events to deliveries ----------------------------------------------------------------
def _wanted(endpoint: dict[str, Any], event: Event) -> bool:
    if event.created_at < endpoint["created_at"]:
        return False  # what happened before the endpoint existed is not its to receive
    if endpoint["scope"] != Endpoint.Scope.ALL and endpoint["owner_id"] != event.owner_id:
        return False
    if endpoint["events"] and event.type not in endpoint["events"]:
        return False
    # An alert about an endpoint goes everywhere but to it (it is failing, or gone).
    details = event.data.get("details") if event.type == "system.alert" else None
    return not (isinstance(details, dict) and details.get("endpoint_id") == str(endpoint["id"]))


def deliveries_create_for_events(events: list[Event]) -> int:
    """The event registry's subscriber: one pending delivery per event and endpoint that
    wants it (the owner's active endpoints subscribed to its type; staff endpoints with
    scope ``all`` for everyone's). Idempotent: an event handed over twice makes none twice."""
    owners = {event.owner_id for event in events if event.owner_id is not None}
    endpoints = list(
        Endpoint.objects.filter(is_active=True, owner__is_active=True)
        .filter(Q(owner_id__in=owners) | Q(scope=Endpoint.Scope.ALL, owner__is_staff=True))
        .values("id", "owner_id", "scope", "events", "created_at")
    )
    if not endpoints:
        return 0
    # KEY SHARE: an endpoint being deleted is waited for and then left out, rather than
    # given deliveries that would break its deletion (or this transaction) at commit.
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM {Endpoint._meta.db_table} WHERE id = ANY(%s) FOR KEY SHARE",
            [[endpoint["id"] for endpoint in endpoints]],
        )
        alive = {row[0] for row in cursor.fetchall()}
    endpoints = [endpoint for endpoint in endpoints if endpoint["id"] in alive]
    now = timezone.now()
    first = now + timedelta(seconds=settings.CHATTER_WEBHOOK_RETRY_SCHEDULE[0])
    rows = [
        Delivery(
            endpoint_id=endpoint["id"],
            event_id=event.pk,
            event_type=event.type,
            next_attempt_at=first,
            created_at=now,
        )
        for event in events
        for endpoint in endpoints
        if _wanted(endpoint, event)
    ]
    if rows:
        Delivery.objects.bulk_create(rows, ignore_conflicts=True)
        transaction.on_commit(webhooks_wake)
    return len(rows)


def webhooks_prune(*, now: Any = None) -> dict[str, int]:
    """Delete finished deliveries (with their attempts) and dispatched events past their
    retention; an event a delivery still waits on is kept."""
    now = now or timezone.now()
    deliveries_before = now - timedelta(days=settings.CHATTER_WEBHOOK_RETENTION_DAYS)
    events_before = now - timedelta(days=settings.CHATTER_EVENTS_RETENTION_DAYS)
    _, deliveries = Delivery.objects.filter(
        created_at__lt=deliveries_before,
        status__in=[DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED],
    ).delete()
    waiting = Delivery.objects.filter(
        status__in=[DeliveryStatus.PENDING, DeliveryStatus.SENDING]
    ).values("event_id")
    _, events = (
        Event.objects.filter(pk__lt=event_id_floor(events_before), dispatched_at__isnull=False)
        .exclude(pk__in=waiting)
        .delete()
    )
    return {
        "deliveries": deliveries.get(Delivery._meta.label, 0),
        "events": events.get(Event._meta.label, 0),
    }
