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

from webhooks.delivery.claim import (
    LOCK_NAMESPACE,
    Claimed,
    deliveries_claim,
    deliveries_due,
    lease_grace_seconds,
)
from webhooks.delivery.loop import POLL_SECONDS, deliveries_run, events_pump
from webhooks.delivery.record import (
    WORKER_LOST,
    endpoint_disable,
    leases_expire,
    outcomes_record,
    retry_delay,
)
from webhooks.delivery.send import USER_AGENT, Outcome, delivery_send

__all__ = [
    "LOCK_NAMESPACE",
    "POLL_SECONDS",
    "USER_AGENT",
    "WORKER_LOST",
    "Claimed",
    "Outcome",
    "deliveries_claim",
    "deliveries_due",
    "deliveries_run",
    "delivery_send",
    "endpoint_disable",
    "events_pump",
    "lease_grace_seconds",
    "leases_expire",
    "outcomes_record",
    "retry_delay",
]
