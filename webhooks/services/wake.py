"""Waking the delivery job: one waiting at most, none while enough are claiming."""

from __future__ import annotations

import math
import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from jobs.models import JobPriority
from jobs.selectors import jobs_running
from jobs.services import enqueue
from webhooks.delivery import (
    lease_grace_seconds,
)
from webhooks.models import Endpoint
from webhooks.services.endpoints import MAX_TIMEOUT_SECONDS

DELIVER_HANDLER = "webhooks_deliver"


def deliver_job_timeout() -> int:
    # The claiming budget, then the slowest send it may have started, then its lease grace.
    return int(settings.CHATTER_WEBHOOK_JOB_SECONDS + MAX_TIMEOUT_SECONDS + lease_grace_seconds())


def delivery_jobs_claiming() -> int:
    """Delivery jobs running within their claiming budget (each picks up new work within
    ~50 ms); a job past it only finishes its sends."""
    since = timezone.now() - timedelta(seconds=settings.CHATTER_WEBHOOK_JOB_SECONDS)
    return jobs_running(handler=DELIVER_HANDLER, started_after=since)


def webhooks_wake(*, handover: bool = False) -> None:
    """Make sure a delivery job will run: nothing to do while CHATTER_WEBHOOK_MAX_JOBS are
    claiming (they find the work themselves); else one waits at most (the dedupe key; a
    running job has let go of it). ``handover``: from a job whose budget is spent."""
    if not handover and delivery_jobs_claiming() >= settings.CHATTER_WEBHOOK_MAX_JOBS:
        return
    enqueue(
        DELIVER_HANDLER,
        priority=JobPriority.HIGH,
        dedupe_key=DELIVER_HANDLER,
        timeout=deliver_job_timeout(),
        max_attempts=1,
    )


# The waker runs after every commit that emitted events (two a chat turn). Whether any
# endpoint is active is read at most once a second per process, and again at once after
# this process saved or deleted one (endpoints_changed). A stale "none" only delays: the
# clock's tick pumps, every second, the events nobody woke a job for.
ACTIVE_ENDPOINTS_TTL_SECONDS = 1.0
_active_seen: tuple[float, bool] = (-math.inf, False)


def endpoints_changed(**_: object) -> None:
    global _active_seen
    _active_seen = (-math.inf, False)


def _active_endpoints_exist() -> bool:
    global _active_seen
    now = time.monotonic()
    if now - _active_seen[0] >= ACTIVE_ENDPOINTS_TTL_SECONDS:
        _active_seen = (now, Endpoint.objects.filter(is_active=True).exists())
    return _active_seen[1]


def webhooks_wake_for_events() -> None:
    """The registry's waker: events were committed. Nobody to deliver to, nothing to wake
    (the clock's dispatcher marks them dispatched)."""
    if _active_endpoints_exist():
        webhooks_wake()
