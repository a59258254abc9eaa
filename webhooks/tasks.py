"""Webhooks' background work: the delivery job, the clock step that finds due retries and
lost sends, and pruning. All thin: the work is in webhooks.delivery and webhooks.services."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from jobs.registry import JobContext, clock_step, job_handler, maintenance_step
from jobs.services import job_dedupe_key_release
from webhooks.delivery import deliveries_due, deliveries_run, events_pump, leases_expire
from webhooks.services import (
    DELIVER_HANDLER,
    deliver_job_timeout,
    delivery_jobs_claiming,
    webhooks_prune,
    webhooks_wake,
)


@job_handler(
    DELIVER_HANDLER,
    timeout=deliver_job_timeout(),
    max_attempts=1,
    emit_events=False,  # its own end as an event would need delivering, and so on
    description="Dispatch waiting events and send due webhook deliveries.",
)
def deliver(ctx: JobContext) -> dict[str, Any]:
    # Work arriving from now on gets a job of its own rather than waiting behind this one.
    job_dedupe_key_release(job_id=ctx.job_id)
    # Jobs past their claiming budget only finish their sends: they do not count.
    if delivery_jobs_claiming() > settings.CHATTER_WEBHOOK_MAX_JOBS:
        return {"skipped": "enough delivery jobs are running"}
    # With its budget spent and work left, a fresh job takes over while this one finishes
    # its sends.
    return deliveries_run(on_budget_spent=lambda: webhooks_wake(handover=True))


@clock_step("webhooks", every_seconds=1.0)
def tick() -> dict[str, Any]:
    """Every second in the jobs clock: events nobody woke a job for, sends whose worker died,
    retries that have come due; a delivery job when there is work for one."""
    summary = {"dispatched": events_pump(), "leases_expired": leases_expire()}
    if deliveries_due():
        webhooks_wake()
        summary["woken"] = 1
    return summary


@maintenance_step("webhooks_prune", order=60)
def prune() -> dict[str, int]:
    """Finished deliveries and dispatched events past their retention."""
    return webhooks_prune()
