"""Endpoints: their checks (URL through the SSRF guard, events, headers), create, change,
delete, rotate the secret, send a test."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from accounts.services import log_action
from core.errors import ApplicationError, Forbidden
from core.events import event_emit, event_types
from core.models import Event
from core.netguard import OutboundFailed, OutboundRefused, check_url
from webhooks.delivery import (
    Claimed,
    delivery_send,
    endpoint_disable,
    lease_grace_seconds,
    outcomes_record,
)
from webhooks.events import TEST_EVENT
from webhooks.models import Delivery, DeliveryStatus, Endpoint
from webhooks.signing import secret_new

MAX_TIMEOUT_SECONDS = 60
MAX_HEADERS = 20
MAX_HEADER_VALUE = 1000
MAX_OVERLAP_SECONDS = 7 * 24 * 3600
HEADER_NAME_PATTERN = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$"
HEADER_VALUE_PATTERN = r"^[\t\x20-\x7e]*$"  # visible ASCII, spaces and tabs
# Headers a delivery sets itself, or that only the HTTP layer may: an endpoint cannot override.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-type",
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "proxy-authorization",
        "user-agent",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)
EDITABLE_FIELDS = (
    "name",
    "url",
    "events",
    "headers",
    "timeout",
    "scope",
    "max_in_flight",  # the admin's (the API does not offer it)
    "is_active",
)


def _invalid(field: str, message: str, code: str = "validation_error") -> ApplicationError:
    return ApplicationError(message, code=code, details={field: [message]})


def subscribable_event_types() -> list[str]:
    return [spec.name for spec in event_types() if spec.broadcast]


def endpoint_url_check(url: str) -> str:
    """The URL, if deliveries may go there: http(s), and every address its host resolves to
    public or in CHATTER_WEBHOOK_ALLOWED_HOSTS (checked again at every send)."""
    try:
        return check_url(url, allowlist=settings.CHATTER_WEBHOOK_ALLOWED_HOSTS).url
    except OutboundRefused as exc:
        raise _invalid("url", exc.message, code="url_not_allowed") from exc
    except OutboundFailed as exc:
        raise _invalid(
            "url", f"{exc.message} Use a host that resolves.", "url_unresolvable"
        ) from exc


def _check_events(events: Any) -> list[str]:
    if not isinstance(events, list) or not all(isinstance(name, str) for name in events):
        raise _invalid("events", "A list of event type names.")
    known = set(subscribable_event_types())
    unknown = sorted(set(events) - known)
    if unknown:
        raise _invalid("events", f"Unknown event types: {', '.join(unknown)}.")
    return sorted(set(events))


def _check_headers(headers: Any) -> dict[str, str]:
    if not isinstance(headers, dict):
        raise _invalid("headers", "An object of header names and values.")
    if len(headers) > MAX_HEADERS:
        raise _invalid("headers", f"At most {MAX_HEADERS} headers.")
    seen: set[str] = set()
    for name, value in headers.items():
        if not isinstance(name, str) or not re.fullmatch(HEADER_NAME_PATTERN, name):
            raise _invalid("headers", f"{name!r} is not a header name.")
        lowered = name.lower()
        if lowered in RESERVED_HEADERS or lowered in seen:
            raise _invalid("headers", f"{name!r} is set by Chatter itself (or named twice).")
        seen.add(lowered)
        if not isinstance(value, str) or len(value) > MAX_HEADER_VALUE:
            raise _invalid("headers", f"{name}: a string of at most {MAX_HEADER_VALUE} characters.")
        if not re.fullmatch(HEADER_VALUE_PATTERN, value):
            raise _invalid("headers", f"{name}: visible ASCII characters, spaces and tabs only.")
    return dict(headers)


def _check_timeout(timeout: Any) -> int:
    if isinstance(timeout, bool) or not isinstance(timeout, int):
        raise _invalid("timeout", "Whole seconds.")
    if not 1 <= timeout <= MAX_TIMEOUT_SECONDS:
        raise _invalid("timeout", f"Between 1 and {MAX_TIMEOUT_SECONDS} seconds.")
    return timeout


def _check_scope(scope: Any, owner: User) -> str:
    if scope not in Endpoint.Scope.values:
        raise _invalid("scope", f"One of {', '.join(Endpoint.Scope.values)}.")
    if scope == Endpoint.Scope.ALL and not owner.is_staff:
        raise Forbidden(
            "Only staff may receive every user's events.", details={"scope": ["Staff only."]}
        )
    return scope


def endpoint_fields_check(fields: dict[str, Any], owner: User) -> dict[str, Any]:
    """The model fields for ``fields`` (the API's names), each checked (400s naming them)."""
    checked: dict[str, Any] = {}
    if "name" in fields:
        name = fields["name"]
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise _invalid("name", "1 to 200 characters.")
        checked["name"] = name.strip()
    if "url" in fields:
        checked["url"] = endpoint_url_check(fields["url"])
    if "events" in fields:
        checked["events"] = _check_events(fields["events"] or [])
    if "headers" in fields:
        checked["headers"] = _check_headers(fields["headers"] or {})
    if "timeout" in fields:
        checked["timeout_seconds"] = _check_timeout(fields["timeout"])
    if "scope" in fields:
        checked["scope"] = _check_scope(fields["scope"], owner)
    if "max_in_flight" in fields:
        value = fields["max_in_flight"]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 50:
            raise _invalid("max_in_flight", "Between 1 and 50.")
        checked["max_in_flight"] = value
    return checked


def endpoint_create(
    *,
    owner: User,
    name: str,
    url: str,
    events: list[str] | None = None,
    headers: dict[str, str] | None = None,
    timeout: int = 15,
    scope: str = Endpoint.Scope.OWN,
) -> Endpoint:
    """A new endpoint with a fresh secret (``endpoint.secret``: show it to its owner once)."""
    fields = endpoint_fields_check(
        {
            "name": name,
            "url": url,
            "events": events or [],
            "headers": headers or {},
            "timeout": timeout,
            "scope": scope,
        },
        owner,
    )
    with transaction.atomic():
        endpoint = Endpoint.objects.create(owner=owner, secret=secret_new(), **fields)
        log_action(
            actor=owner,
            action="webhook.endpoint_created",
            target=endpoint,
            details={"url": endpoint.url},
        )
    return endpoint


def endpoint_update(*, endpoint: Endpoint, actor: User, **fields: Any) -> Endpoint:
    """Change an endpoint; ``is_active`` True enables it again (its failures forgotten),
    False disables it (its pending deliveries fail: redeliver them after enabling)."""
    unknown = set(fields) - set(EDITABLE_FIELDS)
    if unknown:
        raise ApplicationError(f"Unknown fields: {', '.join(sorted(unknown))}.")
    active = fields.pop("is_active", None)
    checked = endpoint_fields_check(fields, endpoint.owner)
    now = timezone.now()
    with transaction.atomic():
        if checked:
            Endpoint.objects.filter(pk=endpoint.pk).update(**checked, updated_at=now)
        if active is True and not endpoint.is_active:
            Endpoint.objects.filter(pk=endpoint.pk).update(
                is_active=True,
                disabled_reason="",
                disabled_at=None,
                consecutive_failures=0,
                failing_since=None,
                updated_at=now,
            )
            log_action(actor=actor, action="webhook.endpoint_enabled", target=endpoint)
            from webhooks.services.wake import endpoints_changed  # wake imports this module

            transaction.on_commit(endpoints_changed)
        elif active is False and endpoint.is_active:
            endpoint_disable(
                endpoint_id=endpoint.pk, reason=f"Disabled by {actor.username}.", by=actor
            )
        if checked:
            log_action(
                actor=actor,
                action="webhook.endpoint_updated",
                target=endpoint,
                details={"fields": sorted(fields)},
            )
    endpoint.refresh_from_db()
    return endpoint


def endpoint_delete(*, endpoint: Endpoint, actor: User) -> None:
    """Delete the endpoint with its deliveries and their attempts, also while some of them
    are being sent: the rows are locked first, so a worker recording an outcome waits and
    then finds them gone."""
    with transaction.atomic():
        Endpoint.objects.select_for_update().filter(pk=endpoint.pk).first()
        list(Delivery.objects.select_for_update().filter(endpoint=endpoint).values_list("pk"))
        log_action(
            actor=actor,
            action="webhook.endpoint_deleted",
            target=endpoint,
            details={"url": endpoint.url},
        )
        endpoint.delete()


def endpoint_rotate_secret(
    *, endpoint: Endpoint, actor: User | None, overlap_seconds: int | None = None
) -> Endpoint:
    """A new secret; deliveries are signed with the old one too for ``overlap_seconds``
    (default CHATTER_WEBHOOK_SECRET_OVERLAP_SECONDS; 0: the old one stops at once), so a
    receiver can switch without losing any."""
    overlap = (
        settings.CHATTER_WEBHOOK_SECRET_OVERLAP_SECONDS
        if overlap_seconds is None
        else overlap_seconds
    )
    if (
        isinstance(overlap, bool)
        or not isinstance(overlap, int)
        or not (0 <= overlap <= MAX_OVERLAP_SECONDS)
    ):
        raise _invalid("overlap_seconds", f"Between 0 and {MAX_OVERLAP_SECONDS} seconds.")
    now = timezone.now()
    with transaction.atomic():
        current = Endpoint.objects.select_for_update().get(pk=endpoint.pk)
        current.previous_secret = current.secret if overlap else ""
        current.previous_secret_expires_at = now + timedelta(seconds=overlap) if overlap else None
        current.secret = secret_new()
        current.secret_rotated_at = now
        current.save(
            update_fields=[
                "previous_secret",
                "previous_secret_expires_at",
                "secret",
                "secret_rotated_at",
                "updated_at",
            ]
        )
        log_action(
            actor=actor,
            action="webhook.secret_rotated",
            target=current,
            details={"overlap_seconds": overlap},
        )
    return current


def endpoint_test(*, endpoint: Endpoint, actor: User | None = None) -> Delivery:
    """Send a ``webhook.test`` event to this endpoint now (this request waits for it), once,
    and return its delivery with the attempt recorded. Works on a disabled endpoint too."""
    now = timezone.now()
    with transaction.atomic():
        event = event_emit(
            type=TEST_EVENT,
            data={
                "endpoint_id": str(endpoint.pk),
                "message": f"A test of {endpoint.name!r}, sent by "
                f"{actor.username if actor else 'Chatter'}.",
            },
            owner_id=endpoint.owner_id,
        )
        delivery = Delivery.objects.create(
            endpoint=endpoint,
            event=event,
            event_type=TEST_EVENT,
            status=DeliveryStatus.SENDING,
            attempt_count=1,
            is_test=True,
            last_attempt_at=now,
            lease_until=now + timedelta(seconds=endpoint.timeout_seconds + lease_grace_seconds()),
        )
    stored = Event.objects.get(pk=event.pk)  # its data as every later attempt reads it
    outcome = delivery_send(
        Claimed(
            delivery_id=delivery.pk,
            endpoint_id=endpoint.pk,
            attempt=1,
            retry_step=0,
            is_test=True,
            event_id=stored.pk,
            event_type=TEST_EVENT,
            owner_id=endpoint.owner_id,
            endpoint_name=endpoint.name,
            payload=stored.as_payload(),
            url=endpoint.url,
            headers=dict(endpoint.headers),
            timeout=endpoint.timeout_seconds,
            secrets=endpoint.signing_secrets(),
        )
    )
    outcomes_record([outcome])
    delivery.refresh_from_db()
    return delivery
