"""Deliveries through the real job queue: a django-q2 cluster on the test database delivers
what the registry's waker queued, and a worker SIGKILLed mid-send loses nothing."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator

import pytest

from core.events import alert_raise
from jobs.clock import Clock
from jobs.models import Job, JobStatus
from tests.jobs.support import Cluster, wait_for
from tests.webhooks.conftest import Reply
from webhooks.models import Delivery, DeliveryStatus
from webhooks.services import DELIVER_HANDLER, endpoint_create

pytestmark = pytest.mark.django_db(transaction=True)

FAST = "0,0.2,0.2,0.2,0.2,0.2,0.2,0.2"


@pytest.fixture
def cluster(transactional_db: None) -> Iterator[Callable[..., Cluster]]:
    started: list[Cluster] = []

    def start(**env: str) -> Cluster:
        started.append(
            Cluster(
                1,
                {
                    "CHATTER_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
                    "CHATTER_WEBHOOK_RETRY_SCHEDULE": FAST,
                    "CHATTER_WEBHOOK_LEASE_GRACE_SECONDS": "1",
                    **env,
                },
            )
        )
        return started[-1]

    yield start
    for running in started:
        running.stop()


def test_an_event_is_delivered_by_a_worker_woken_when_it_commits(user, receiver, cluster):
    cluster()
    endpoint = endpoint_create(owner=user, name="worker", url=receiver.url("/hook"))

    alert_raise(code="committed", message="wake up", owner_id=user.pk)  # autocommit: committed

    wait_for(lambda: receiver.at("/hook"), timeout=60, what="the delivery reached the receiver")
    wait_for(
        lambda: Delivery.objects.filter(
            endpoint=endpoint, status=DeliveryStatus.SUCCEEDED
        ).exists(),
        timeout=30,
        what="the delivery was recorded",
    )
    job = Job.objects.filter(handler=DELIVER_HANDLER).order_by("id").first()
    assert job is not None and job.dedupe_key is None  # it let go of its key when it started


def test_a_worker_killed_while_sending_loses_nothing(user, receiver, cluster, fast_retries):
    running = cluster()
    endpoint = endpoint_create(owner=user, name="worker", url=receiver.url("/hook"), timeout=4)
    sending = threading.Event()

    def decide(got) -> Reply:
        if not sending.is_set():
            sending.set()
            return Reply(delay=30)  # the worker waits here until it is killed
        return Reply()

    receiver.decide = decide
    alert_raise(code="committed", message="deliver me", owner_id=user.pk)
    assert sending.wait(60), running.output()
    job = Job.objects.get(handler=DELIVER_HANDLER, status=JobStatus.RUNNING)
    os.kill(job.worker_pid, signal.SIGKILL)

    # The jobs clock (here, in the test process) reaps the dead job; its webhooks step takes
    # the delivery back once its lease (timeout + grace) has run out and wakes a new job,
    # which the cluster's replacement worker runs.
    clock = Clock(interval=0.2)

    def delivered() -> bool:
        clock.tick()
        return Delivery.objects.filter(status=DeliveryStatus.SUCCEEDED).exists()

    wait_for(delivered, timeout=120, what="the delivery succeeded after the kill")
    delivery = Delivery.objects.get(endpoint=endpoint)
    lost, sent = delivery.attempts.all()
    assert (lost.number, lost.status_code) == (1, None) and "lease expired" in lost.error
    assert (sent.number, sent.status_code) == (2, 200)
    first, second = receiver.at("/hook")
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery.event_id
    assert Job.objects.get(pk=job.pk).status == JobStatus.DEAD
