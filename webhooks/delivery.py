"""Sending deliveries: claim them (each endpoint's concurrency bounded), POST them (signed,
through the SSRF guard), record every attempt and what follows (retry, success, failure).

Why it is shaped like this:

- **State is in PostgreSQL.** A delivery is a row; a worker *claims* due ones (status
  ``sending`` with a lease: its endpoint's timeout plus a grace) and records each outcome
  with a fenced update (only if it still holds that attempt). A worker killed mid-send
  loses nothing: its lease expires, the clock records the attempt as lost and the
  delivery is retried on its schedule. Receivers may see an attempt twice (at least once,
  as the spec says), with the same ``webhook-id``.
- **One slow endpoint never delays the others.** An endpoint has at most ``max_in_flight``
  deliveries in flight across every worker (the claim counts them under a per-endpoint
  advisory lock, so two workers cannot both take its last slot), and a worker sends from a
  pool of ``CHATTER_WEBHOOK_CONCURRENCY`` threads: an endpoint that times out holds only
  its own slots while the other threads keep sending to everyone else.
- **Retries**: ``CHATTER_WEBHOOK_RETRY_SCHEDULE`` (now, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
  10 h), each delay +-``CHATTER_WEBHOOK_RETRY_JITTER``; a 429 or 503 with ``Retry-After``
  waits what it asks (at most the schedule's longest step). After the last attempt the
  delivery is failed and a ``system.alert`` raised. A 410 disables the endpoint; so does
  failing for ``CHATTER_WEBHOOK_DISABLE_AFTER_SECONDS`` (5 days) without a success. A
  redirect is a failure (never followed: the target was checked, its redirect was not).
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import httpx
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from accounts.services import log_action
from core.events import alert_raise, events_dispatch, events_undispatched
from core.models import Event
from core.netguard import OutboundFailed, OutboundRefused, guarded_client, send
from webhooks.models import Delivery, DeliveryAttempt, DeliveryStatus, Endpoint
from webhooks.signing import payload_bytes, signature_header

logger = logging.getLogger("chatter.webhooks")

USER_AGENT = "Chatter-Webhooks/1.0"


def lease_grace_seconds() -> float:
    """How long past its endpoint's timeout a claimed delivery stays its worker's."""
    return float(settings.CHATTER_WEBHOOK_LEASE_GRACE_SECONDS)


# Two-int advisory locks in their own key space: this first key marks them as webhooks'.
LOCK_NAMESPACE = 0x57484B53  # "WHKS"
# How often a delivery loop looks for new events and due deliveries, busy or idle alike
# (the same cadence either way: a slow endpoint's sends in flight must not change it).
POLL_SECONDS = 0.03
WORKER_LOST = (
    "The worker sending it stopped before recording an outcome (its lease expired); "
    "the receiver may or may not have got this attempt."
)


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


@dataclass
class Outcome:
    claimed: Claimed
    started_at: datetime
    duration_ms: int = 0
    status_code: int | None = None
    succeeded: bool = False
    excerpt: str = ""
    error: str = ""
    address: str = ""
    timestamp: int | None = None
    retry_after: float | None = None
    gone: bool = False
    health: bool = True  # whether it says anything about the endpoint (a lost worker does not)


def _tables() -> dict[str, str]:
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
    tables = _tables()
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


def _retry_after(headers: dict[str, str]) -> float | None:
    """Seconds a 429/503's ``Retry-After`` asks for (delta-seconds or an HTTP date)."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - timezone.now()).total_seconds())


def delivery_send(claimed: Claimed, *, client: httpx.Client | None = None) -> Outcome:
    """POST one attempt (signed over the exact bytes sent) and say how it went. Never raises
    for anything the receiver or the network does."""
    body = payload_bytes(claimed.payload)
    timestamp = int(time.time())
    headers = {
        **claimed.headers,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": claimed.event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(
            claimed.secrets, msg_id=claimed.event_id, timestamp=timestamp, body=body
        ),
    }
    outcome = Outcome(claimed=claimed, started_at=timezone.now(), timestamp=timestamp)
    started = time.monotonic()
    try:
        result = send(
            "POST",
            claimed.url,
            content=body,
            headers=headers,
            timeout=float(claimed.timeout),
            follow_redirects=False,
            max_bytes=settings.CHATTER_WEBHOOK_RESPONSE_MAX_BYTES,
            allowlist=settings.CHATTER_WEBHOOK_ALLOWED_HOSTS,
            client=client,
        )
    except OutboundRefused as exc:
        outcome.error = f"Refused by the SSRF guard: {exc.message}"
    except OutboundFailed as exc:
        outcome.error = exc.message
    except Exception as exc:  # a bug must cost this attempt, not the worker's other sends
        logger.exception("sending delivery %s failed", claimed.delivery_id)
        outcome.error = f"{type(exc).__name__}: {exc}"
    else:
        status = result.status
        outcome.status_code = status
        outcome.address = result.address
        outcome.excerpt = result.body.decode("utf-8", errors="replace")[
            : settings.CHATTER_WEBHOOK_RESPONSE_EXCERPT_CHARS
        ]
        outcome.succeeded = 200 <= status < 300
        if 300 <= status < 400:
            location = result.headers.get("location", "")
            outcome.error = f"HTTP {status}: redirects are not followed (to {location!r})"[:2000]
        elif not outcome.succeeded:
            outcome.error = f"HTTP {status}"
        if status in (429, 503):
            outcome.retry_after = _retry_after(result.headers)
        outcome.gone = status == 410
    outcome.duration_ms = int((time.monotonic() - started) * 1000)
    return outcome


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
            _RECORD_SQL.format(**_tables()),
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
                f"SELECT id FROM {_tables()['delivery']} WHERE id = ANY(%s) FOR KEY SHARE",
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
        cursor.execute(_HEALTH_SQL.format(**_tables()), {**columns, "now": now, "limit": limit})
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


def deliveries_due(now: datetime | None = None) -> bool:
    """Whether any delivery of an active endpoint is due now."""
    return Delivery.objects.filter(
        status=DeliveryStatus.PENDING,
        next_attempt_at__lte=now or timezone.now(),
        endpoint__is_active=True,
    ).exists()


class _Clients:
    """Guarded clients for this run, one per sending thread and target host: keep-alive to
    the checked address (a TLS connection belongs to one server name, so hosts never share
    one), and no connection pool shared between threads (under load a shared sync pool
    handed sockets another thread had closed: EBADF)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.clients: dict[tuple[int, str, str, int | None], httpx.Client] = {}

    def get(self, url: str) -> httpx.Client:
        parts = urlsplit(url)
        key = (threading.get_ident(), parts.scheme, (parts.hostname or "").lower(), parts.port)
        with self.lock:
            client = self.clients.get(key)
            if client is None:
                client = self.clients[key] = guarded_client(max_connections=1)
            return client

    def close(self) -> None:
        with self.lock:
            for client in self.clients.values():
                client.close()
            self.clients.clear()


def _send_in_thread(claimed: Claimed, clients: _Clients) -> Outcome:
    return delivery_send(claimed, client=clients.get(claimed.url))


def deliveries_run(
    *,
    seconds: float | None = None,
    concurrency: int | None = None,
    should_stop: Callable[[], bool] | None = None,
    idle_seconds: float | None = None,
    on_budget_spent: Callable[[], None] | None = None,
) -> dict[str, int]:
    """The delivery loop (a ``webhooks_deliver`` job's body): hand waiting events to the
    subscribers, claim due deliveries into a pool of sending threads as slots free up,
    record outcomes as they come back. Claims for ``seconds`` (then lets what is in flight
    finish); returns early once nothing has been due or in flight for ``idle_seconds``
    (CHATTER_WEBHOOK_IDLE_SECONDS: a job that lingers picks up the next events within
    milliseconds, instead of a new job being queued and started for them). When the budget
    is spent, ``on_budget_spent`` is called before what is in flight is waited for, so that
    a successor claims meanwhile (a slow endpoint's sends may take its whole timeout)."""
    budget = settings.CHATTER_WEBHOOK_JOB_SECONDS if seconds is None else seconds
    linger = settings.CHATTER_WEBHOOK_IDLE_SECONDS if idle_seconds is None else idle_seconds
    busy_at = time.monotonic()
    threads = concurrency or settings.CHATTER_WEBHOOK_CONCURRENCY
    deadline = time.monotonic() + budget
    clients = _Clients()
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="webhook-send")
    in_flight: set[Future[Outcome]] = set()
    summary = {"sent": 0, "succeeded": 0, "failed": 0, "dispatched": 0}
    last_pump = 0.0
    try:
        while True:
            claiming = time.monotonic() < deadline and not (should_stop and should_stop())
            if not claiming and on_budget_spent is not None:
                handover, on_budget_spent = on_budget_spent, None
                if in_flight or deliveries_due() or events_undispatched():
                    handover()
            claimed: list[Claimed] = []
            if claiming:
                if time.monotonic() - last_pump >= POLL_SECONDS:
                    summary["dispatched"] += events_pump()
                    last_pump = time.monotonic()
                claimed = deliveries_claim(limit=threads - len(in_flight))
                for item in claimed:
                    in_flight.add(pool.submit(_send_in_thread, item, clients))
            if not in_flight:
                if claimed:
                    continue
                if claiming and time.monotonic() - busy_at < linger:
                    time.sleep(POLL_SECONDS)
                    continue
                if claiming and events_pump():  # a last look (alerts the outcomes raised)
                    last_pump = busy_at = time.monotonic()
                    continue
                break
            busy_at = time.monotonic()
            done, in_flight = wait(
                in_flight, timeout=POLL_SECONDS if claiming else None, return_when=FIRST_COMPLETED
            )
            outcomes = [future.result() for future in done]
            if outcomes:
                outcomes_record(outcomes)
                summary["sent"] += len(outcomes)
                summary["succeeded"] += sum(o.succeeded for o in outcomes)
                summary["failed"] += sum(not o.succeeded for o in outcomes)
    finally:
        # On a stop or a timeout, sends still running are abandoned: their leases expire and
        # the clock takes them back.
        pool.shutdown(wait=False, cancel_futures=True)
        clients.close()
    return summary


def events_pump() -> int:
    """Dispatch waiting events (a few batches at most: sending must not wait on a backlog)."""
    total = 0
    for _ in range(5):
        count = events_dispatch()
        total += count
        if count < 500:
            break
    return total
