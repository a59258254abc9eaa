"""The delivery loop: dispatch events, claim into a pool of sending threads, record."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from django.conf import settings

from core.events import events_dispatch, events_undispatched
from webhooks.delivery.claim import Claimed, deliveries_claim, deliveries_due
from webhooks.delivery.record import outcomes_record
from webhooks.delivery.send import Outcome, SendClients, send_with_clients

# How often a delivery loop looks for new events and due deliveries, busy or idle alike
# (the same cadence either way: a slow endpoint's sends in flight must not change it).
POLL_SECONDS = 0.03


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
    clients = SendClients()
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
                    in_flight.add(pool.submit(send_with_clients, item, clients))
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
