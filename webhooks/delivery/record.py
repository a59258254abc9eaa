"""Recording outcomes: every attempt, the delivery's next step, its endpoint's health,
disabling, alerts; and taking back the sends of workers that died."""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from accounts.services import log_action
from core.events import alert_raise
from webhooks.delivery.claim import Claimed, table_names
from webhooks.delivery.send import Outcome
from webhooks.models import Delivery, DeliveryAttempt, DeliveryStatus, Endpoint

logger = logging.getLogger("chatter.webhooks")

WORKER_LOST = (
    "The worker sending it stopped before recording an outcome (its lease expired); "
    "the receiver may or may not have got this attempt."
)


def retry_delay(step: int, *, retry_after: float | None = None) -> float:
    """Seconds before attempt ``step`` (0-based) of the schedule, jittered; a receiver's
    Retry-After instead when it gave one (at most the schedule's longest step)."""
    schedule = settings.CHATTER_WEBHOOK_RETRY_SCHEDULE
    if retry_after is not None:
        return min(max(retry_after, 0.0), max(schedule))
    delay = schedule[step]
    jitter = settings.CHATTER_WEBHOOK_RETRY_JITTER
    return max(0.0, delay * (1 + random.uniform(-jitter, jitter)))


# synchronous_commit off for this transaction (claims likewise): only a crash of PostgreSQL
# itself can lose its last fraction of a second, and then a delivery is back to "sending"
# under its lease, taken back by the clock and sent again (at least once, as ever): an
# outcome may be lost that way, never a delivery.
_RECORD_SQL = """
WITH async_commit AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true))
UPDATE {delivery} AS d SET
    status = v.status, retry_step = v.retry_step, next_attempt_at = v.next_attempt_at,
    lease_until = NULL, last_status_code = v.status_code, last_error = v.error,
    delivered_at = COALESCE(v.delivered_at, d.delivered_at), updated_at = %(now)s
FROM unnest(%(ids)s::uuid[], %(attempts)s::int[], %(statuses)s::text[], %(steps)s::int[],
            %(nexts)s::timestamptz[], %(codes)s::int[], %(errors)s::text[],
            %(delivered)s::timestamptz[])
     AS v(id, attempt, status, retry_step, next_attempt_at, status_code, error, delivered_at),
     async_commit
WHERE d.id = v.id AND d.status = 'sending' AND d.attempt_count = v.attempt
RETURNING d.id
"""


def _next_state(outcome: Outcome, now: datetime) -> tuple[str, int, datetime | None, bool]:
    """(status, retry_step, next_attempt_at, final failure) after ``outcome``."""
    claimed = outcome.claimed
    if outcome.succeeded:
        return DeliveryStatus.SUCCEEDED, claimed.retry_step, None, False
    if outcome.gone or claimed.is_test:
        return DeliveryStatus.FAILED, claimed.retry_step, None, False
    step = claimed.retry_step + 1
    if step >= len(settings.CHATTER_WEBHOOK_RETRY_SCHEDULE):
        return DeliveryStatus.FAILED, claimed.retry_step, None, True
    delay = retry_delay(step, retry_after=outcome.retry_after)
    return DeliveryStatus.PENDING, step, now + timedelta(seconds=delay), False


def outcomes_record(outcomes: list[Outcome], *, now: datetime | None = None) -> int:
    """Store every attempt, move each delivery on (fenced: only the attempt that holds it),
    update its endpoint's health, disable endpoints that answered 410 or have failed for too
    long, and raise an alert for each delivery that failed for good. One transaction.
    Returns how many deliveries were moved on."""
    if not outcomes:
        return 0
    now = now or timezone.now()
    states = [_next_state(outcome, now) for outcome in outcomes]
    ids = [o.claimed.delivery_id for o in outcomes]
    with transaction.atomic(), connection.cursor() as cursor:
        # The fenced update first: it locks the deliveries it moves on, so that nobody can
        # delete them (an endpoint being deleted) before their attempts are stored.
        cursor.execute(
            _RECORD_SQL.format(**table_names()),
            {
                "now": now,
                "ids": ids,
                "attempts": [o.claimed.attempt for o in outcomes],
                "statuses": [state[0] for state in states],
                "steps": [state[1] for state in states],
                "nexts": [state[2] for state in states],
                "codes": [o.status_code for o in outcomes],
                "errors": [o.error for o in outcomes],
                "delivered": [now if o.succeeded else None for o in outcomes],
            },
        )
        moved = {row[0] for row in cursor.fetchall()}
        # Attempts fenced out (a lease taken back meanwhile) happened too: stored as well, if
        # their delivery still exists (locked until this commits).
        existing = set(moved)
        fenced_out = [i for i in ids if i not in moved]
        if fenced_out:
            cursor.execute(
                f"SELECT id FROM {table_names()['delivery']} WHERE id = ANY(%s) FOR KEY SHARE",
                [fenced_out],
            )
            existing |= {row[0] for row in cursor.fetchall()}
        DeliveryAttempt.objects.bulk_create(
            [
                DeliveryAttempt(
                    delivery_id=o.claimed.delivery_id,
                    number=o.claimed.attempt,
                    started_at=o.started_at,
                    duration_ms=o.duration_ms,
                    status_code=o.status_code,
                    succeeded=o.succeeded,
                    response_excerpt=o.excerpt,
                    error=o.error,
                    address=o.address,
                    webhook_timestamp=o.timestamp,
                )
                for o in outcomes
                if o.claimed.delivery_id in existing
            ]
        )
        written = [
            (o, state)
            for o, state in zip(outcomes, states, strict=True)
            if o.claimed.delivery_id in moved
        ]
        _health_record([o for o, _ in written if o.health and not o.claimed.is_test], now)
        for endpoint_id in {o.claimed.endpoint_id for o, _ in written if o.gone}:
            endpoint_disable(
                endpoint_id=endpoint_id,
                reason="The endpoint answered 410 Gone: it asked not to be sent anything more.",
                now=now,
            )
        for outcome, state in written:
            if state[3]:
                _alert_final_failure(outcome)
    return len(moved)


# Each endpoint's health after a batch of outcomes, in one statement. With a success in the
# batch: the failures after the last one (and the first of them) are the count; without
# one, the failures add to it. A healthy endpoint's row is written at most once a second
# (last_success_at), not once per delivery. Returns the endpoints failing for too long.
_HEALTH_SQL = """
UPDATE {endpoint} AS e SET
    consecutive_failures = CASE WHEN v.last_success IS NOT NULL THEN v.failures_after
                                ELSE e.consecutive_failures + v.failures END,
    failing_since = CASE WHEN v.last_success IS NOT NULL THEN v.first_failure_after
                         ELSE COALESCE(e.failing_since, v.first_failure) END,
    last_success_at = COALESCE(v.last_success, e.last_success_at),
    last_failure_at = COALESCE(v.last_failure, e.last_failure_at),
    updated_at = %(now)s
FROM unnest(%(ids)s::uuid[], %(last_success)s::timestamptz[], %(failures_after)s::int[],
            %(first_failure_after)s::timestamptz[], %(failures)s::int[],
            %(first_failure)s::timestamptz[], %(last_failure)s::timestamptz[])
     AS v(id, last_success, failures_after, first_failure_after, failures, first_failure,
          last_failure)
WHERE e.id = v.id
  AND (v.failures > 0 OR e.consecutive_failures <> 0 OR e.failing_since IS NOT NULL
       OR e.last_success_at IS NULL OR e.last_success_at < v.last_success - interval '1 second')
RETURNING e.id, e.is_active AND e.failing_since <= %(limit)s
"""


def _health_record(outcomes: list[Outcome], now: datetime) -> None:
    by_endpoint: dict[UUID, list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        by_endpoint[outcome.claimed.endpoint_id].append(outcome)
    if not by_endpoint:
        return
    columns: dict[str, list[Any]] = defaultdict(list)
    for endpoint_id, results in by_endpoint.items():
        successes = [o.started_at for o in results if o.succeeded]
        failures = [o.started_at for o in results if not o.succeeded]
        last = max(successes) if successes else None
        after = [at for at in failures if last is not None and at > last]
        columns["ids"].append(endpoint_id)
        columns["last_success"].append(last)
        columns["failures_after"].append(len(after))
        columns["first_failure_after"].append(min(after) if after else None)
        columns["failures"].append(len(failures))
        columns["first_failure"].append(min(failures) if failures else None)
        columns["last_failure"].append(max(failures) if failures else None)
    limit = now - timedelta(seconds=settings.CHATTER_WEBHOOK_DISABLE_AFTER_SECONDS)
    with connection.cursor() as cursor:
        cursor.execute(_HEALTH_SQL.format(**table_names()), {**columns, "now": now, "limit": limit})
        too_long = [endpoint_id for endpoint_id, failing in cursor.fetchall() if failing]
    days = settings.CHATTER_WEBHOOK_DISABLE_AFTER_SECONDS / 86400
    for endpoint_id in too_long:
        endpoint_disable(
            endpoint_id=endpoint_id,
            reason=f"Every delivery has failed for {days:g} days (since the last success).",
            now=now,
        )


def endpoint_disable(
    *, endpoint_id: UUID, reason: str, now: datetime | None = None, by: Any = None
) -> bool:
    """Disable an active endpoint: its pending deliveries fail (redeliver them once it is
    enabled again) and the audit log records it. Disabled by Chatter (``by`` None: a 410,
    5 days of failures), a ``system.alert`` tells its owner (on their other endpoints) and
    the operators; the admin lists it. Returns whether it was active."""
    now = now or timezone.now()
    with transaction.atomic():
        disabled = Endpoint.objects.filter(pk=endpoint_id, is_active=True).update(
            is_active=False, disabled_reason=reason[:500], disabled_at=now, updated_at=now
        )
        if not disabled:
            return False
        Delivery.objects.filter(endpoint_id=endpoint_id, status=DeliveryStatus.PENDING).update(
            status=DeliveryStatus.FAILED,
            next_attempt_at=None,
            last_error=f"Not sent: the endpoint was disabled. {reason}"[:2000],
            updated_at=now,
        )
        endpoint = Endpoint.objects.select_related("owner").get(pk=endpoint_id)
        log_action(
            actor=by,
            action="webhook.endpoint_disabled",
            target=endpoint,
            details={"reason": reason, "url": endpoint.url},
        )
        if by is not None:
            return True
        alert_raise(
            code="webhook_endpoint_disabled",
            level="error",
            message=f"Webhook endpoint {endpoint.name!r} ({endpoint.url}) was disabled: {reason}",
            owner_id=endpoint.owner_id,
            details={"endpoint_id": str(endpoint.pk), "reason": reason},
        )
    logger.warning("webhook endpoint %s disabled: %s", endpoint_id, reason)
    return True


def _alert_final_failure(outcome: Outcome) -> None:
    claimed = outcome.claimed
    if claimed.event_type == "system.alert":
        return  # an alert about an alert that could not be delivered would never end
    alert_raise(
        code="webhook_delivery_failed",
        level="warning",
        message=(
            f"A {claimed.event_type} event could not be delivered to {claimed.endpoint_name!r} "
            f"after {claimed.attempt} attempts: {outcome.error}"
        )[:2000],
        owner_id=claimed.owner_id,
        details={
            "endpoint_id": str(claimed.endpoint_id),
            "delivery_id": str(claimed.delivery_id),
            "event_id": claimed.event_id,
            "event_type": claimed.event_type,
            "attempts": claimed.attempt,
            "last_error": outcome.error[:500],
        },
    )


def leases_expire(*, now: datetime | None = None, limit: int = 200) -> int:
    """Take back deliveries whose worker's lease ran out (the worker died or hung): the
    attempt is recorded as lost and the delivery goes on with its schedule."""
    now = now or timezone.now()
    with transaction.atomic():
        expired = list(
            Delivery.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("endpoint")
            .filter(status=DeliveryStatus.SENDING, lease_until__lt=now)
            .order_by("lease_until")[:limit]
        )
        outcomes = [
            Outcome(
                claimed=Claimed(
                    delivery_id=d.pk,
                    endpoint_id=d.endpoint_id,
                    attempt=d.attempt_count,
                    retry_step=d.retry_step,
                    is_test=d.is_test,
                    event_id=d.event_id,
                    event_type=d.event_type,
                    owner_id=d.endpoint.owner_id,
                    endpoint_name=d.endpoint.name,
                ),
                started_at=d.last_attempt_at or now,
                error=WORKER_LOST,
                health=False,
            )
            for d in expired
        ]
        return outcomes_record(outcomes, now=now)
