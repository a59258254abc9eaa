"""The pieces webhooks hooks into: the jobs clock's steps, the delivery job's handler, the
clock step that takes back lost sends, retention."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from core.events import alert_raise
from core.models import Event
from jobs.clock import Clock
from jobs.models import Job, JobStatus
from jobs.registry import _clock_steps, clock_step
from tests.webhooks.conftest import Reply, deliver_once
from webhooks.delivery import deliveries_claim, events_pump
from webhooks.models import Delivery, DeliveryStatus
from webhooks.services import DELIVER_HANDLER, webhooks_prune, webhooks_wake
from webhooks.tasks import tick

pytestmark = pytest.mark.django_db


def test_the_clock_runs_each_step_at_its_interval_and_survives_one_that_fails():
    calls: list[str] = []

    @clock_step("test.often", every_seconds=0)
    def often() -> int:
        calls.append("often")
        return 1

    @clock_step("test.broken", every_seconds=0)
    def broken() -> None:
        raise RuntimeError("a step that fails")

    @clock_step("test.rarely", every_seconds=3600)
    def rarely() -> int:
        calls.append("rarely")
        return 2

    try:
        clock = Clock(interval=0.5)
        first = clock.run_steps()
        second = clock.run_steps()
    finally:
        for name in ("test.often", "test.broken", "test.rarely"):
            _clock_steps.pop(name, None)

    assert (first["test.often"], first["test.broken"], first["test.rarely"]) == (1, "failed", 2)
    assert "test.rarely" not in second and second["test.often"] == 1
    assert calls == ["often", "rarely", "often"]


def test_the_clock_step_takes_back_a_lost_send_and_wakes_a_delivery_job(
    user, make_endpoint, receiver
):
    make_endpoint(user)
    alert_raise(code="x", message="y", owner_id=user.pk)
    events_pump()
    [claimed] = deliveries_claim(limit=5)
    Delivery.objects.filter(pk=claimed.delivery_id).update(
        lease_until=timezone.now() - timedelta(seconds=1)
    )

    summary = tick()

    assert summary["leases_expired"] == 1
    delivery = Delivery.objects.get()
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts.count() == 1
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    assert tick()["woken"] == 1
    job = Job.objects.get(handler=DELIVER_HANDLER)
    assert (job.status, job.priority, job.dedupe_key) == (
        JobStatus.PENDING,
        "high",
        DELIVER_HANDLER,
    )
    webhooks_wake()  # a second wake finds the waiting job: still one
    assert Job.objects.filter(handler=DELIVER_HANDLER).count() == 1


def test_no_job_is_queued_while_enough_delivery_jobs_are_claiming(settings):
    now = timezone.now()
    Job.objects.create(
        handler=DELIVER_HANDLER,
        status=JobStatus.RUNNING,
        available_at=now,
        rank_at=now,
        started_at=now,
        attempts=1,
    )
    settings.CHATTER_WEBHOOK_MAX_JOBS = 1

    webhooks_wake()
    assert Job.objects.filter(handler=DELIVER_HANDLER).count() == 1
    webhooks_wake(handover=True)  # a job whose budget is spent asks for its successor
    assert Job.objects.filter(handler=DELIVER_HANDLER, status=JobStatus.PENDING).count() == 1


def test_finished_deliveries_and_dispatched_events_are_pruned_after_their_retention(
    user, make_endpoint, receiver
):
    make_endpoint(user)
    receiver.script("/hook", Reply(200), Reply(500))
    alert_raise(code="old", message="delivered", owner_id=user.pk)
    alert_raise(code="old", message="still retrying", owner_id=user.pk)
    deliver_once()
    # A month from now, everything above is past its retention.
    later = timezone.now() + timedelta(days=31)

    # The delivered alert and alice's user.registered go; the retrying alert's event stays.
    assert webhooks_prune(now=later) == {"deliveries": 1, "events": 2}

    [waiting] = Delivery.objects.all()
    assert waiting.status == DeliveryStatus.PENDING  # its event is kept for it
    assert list(Event.objects.values_list("pk", flat=True)) == [waiting.event_id]
