"""Claiming due deliveries: each endpoint's in-flight bound held across every worker."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from core.models import Event
from webhooks.models import Delivery, DeliveryStatus, Endpoint

# Two-int advisory locks in their own key space: this first key marks them as webhooks'.
LOCK_NAMESPACE = 0x57484B53  # "WHKS"


def lease_grace_seconds() -> float:
    """How long past its endpoint's timeout a claimed delivery stays its worker's."""
    return float(settings.CHATTER_WEBHOOK_LEASE_GRACE_SECONDS)


@dataclass
class Claimed:
    """A delivery a worker holds for one attempt, with what it needs to send it."""

    delivery_id: UUID
    endpoint_id: UUID
    attempt: int
    retry_step: int
    is_test: bool
    event_id: str
    event_type: str
    owner_id: int
    endpoint_name: str
    payload: dict[str, Any] = field(default_factory=dict)
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    timeout: int = 15
    secrets: list[str] = field(default_factory=list)


def table_names() -> dict[str, str]:
    return {
        "endpoint": Endpoint._meta.db_table,
        "delivery": Delivery._meta.db_table,
        "event": Event._meta.db_table,
    }


# Endpoints with due deliveries and a free slot, the longest-waiting first, each locked for
# this transaction (skipped when another claim holds it). MATERIALIZED: the lock is taken
# only on the candidates chosen, not on rows the planner happens to visit.
_CANDIDATES_SQL = """
WITH candidates AS MATERIALIZED (
    SELECT e.id,
           (SELECT min(d.next_attempt_at) FROM {delivery} d
            WHERE d.endpoint_id = e.id AND d.status = 'pending') AS oldest
    FROM {endpoint} e
    WHERE e.is_active
      AND EXISTS (SELECT 1 FROM {delivery} d
                  WHERE d.endpoint_id = e.id AND d.status = 'pending'
                    AND d.next_attempt_at <= %(now)s)
      AND (SELECT count(*) FROM {delivery} s
           WHERE s.endpoint_id = e.id AND s.status = 'sending'
             AND s.lease_until > %(now)s) < e.max_in_flight
    ORDER BY oldest
    LIMIT %(endpoints)s
)
SELECT id FROM candidates WHERE pg_try_advisory_xact_lock(%(ns)s, hashtext(id::text))
"""

# Under those locks (a new snapshot: every claim that held them has committed), take up to
# each endpoint's free slots of its due deliveries, oldest first.
_CLAIM_SQL = """
WITH async_commit AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true)),
busy AS (
    SELECT endpoint_id, count(*) AS n FROM {delivery}
    WHERE status = 'sending' AND lease_until > %(now)s AND endpoint_id = ANY(%(ids)s)
    GROUP BY endpoint_id
), chosen AS (
    SELECT x.id FROM {endpoint} e
    LEFT JOIN busy b ON b.endpoint_id = e.id
    CROSS JOIN LATERAL (
        SELECT d.id, d.next_attempt_at FROM {delivery} d
        WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.next_attempt_at <= %(now)s
        ORDER BY d.next_attempt_at
        LIMIT GREATEST(e.max_in_flight - COALESCE(b.n, 0), 0)
    ) x
    WHERE e.id = ANY(%(ids)s) AND e.is_active
    ORDER BY x.next_attempt_at
    LIMIT %(limit)s
)
UPDATE {delivery} d SET
    status = 'sending', attempt_count = d.attempt_count + 1, last_attempt_at = %(now)s,
    lease_until = %(now)s + make_interval(secs => e.timeout_seconds + %(grace)s),
    updated_at = %(now)s
FROM chosen, {endpoint} e, {event} ev, async_commit
WHERE d.id = chosen.id AND e.id = d.endpoint_id AND ev.id = d.event_id
RETURNING d.id, d.endpoint_id, d.attempt_count, d.retry_step, d.is_test,
          ev.id, ev.type, ev.created_at, ev.data, e.owner_id, e.name, e.url, e.headers,
          e.timeout_seconds, e.secret, e.previous_secret, e.previous_secret_expires_at
"""


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _claimed(row: tuple[Any, ...], now: datetime) -> Claimed:
    (
        delivery_id,
        endpoint_id,
        attempt,
        retry_step,
        is_test,
        event_id,
        event_type,
        event_created,
        event_data,
        owner_id,
        name,
        url,
        headers,
        timeout,
        secret,
        previous,
        previous_expires,
    ) = row
    event = Event(id=event_id, type=event_type, created_at=event_created, data=_json(event_data))
    secrets_ = [secret]
    if previous and previous_expires is not None and previous_expires > now:
        secrets_.append(previous)
    return Claimed(
        delivery_id=delivery_id,
        endpoint_id=endpoint_id,
        attempt=attempt,
        retry_step=retry_step,
        is_test=is_test,
        event_id=event_id,
        event_type=event_type,
        owner_id=owner_id,
        endpoint_name=name,
        payload=event.as_payload(),
        url=url,
        headers=_json(headers) or {},
        timeout=timeout,
        secrets=secrets_,
    )


def deliveries_claim(*, limit: int, now: datetime | None = None) -> list[Claimed]:
    """Take up to ``limit`` due deliveries for one attempt each, no endpoint past its
    ``max_in_flight`` (counted across every worker)."""
    if limit <= 0:
        return []
    now = now or timezone.now()
    tables = table_names()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            _CANDIDATES_SQL.format(**tables), {"now": now, "endpoints": limit, "ns": LOCK_NAMESPACE}
        )
        ids = [row[0] for row in cursor.fetchall()]
        if not ids:
            return []
        cursor.execute(
            _CLAIM_SQL.format(**tables),
            {"now": now, "ids": ids, "limit": limit, "grace": lease_grace_seconds()},
        )
        rows = cursor.fetchall()
    return [_claimed(row, now) for row in rows]


def deliveries_due(now: datetime | None = None) -> bool:
    """Whether any delivery of an active endpoint is due now."""
    return Delivery.objects.filter(
        status=DeliveryStatus.PENDING,
        next_attempt_at__lte=now or timezone.now(),
        endpoint__is_active=True,
    ).exists()
