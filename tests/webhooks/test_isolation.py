"""One slow endpoint never delays the others: it holds at most its own in-flight slots,
counted across every worker, while the other deliveries go out."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection

from core.events import alert_raise
from tests.webhooks.conftest import Reply
from webhooks.delivery import deliveries_run, events_pump
from webhooks.models import Delivery, DeliveryAttempt, DeliveryStatus, Endpoint


def _most_at_once(attempts) -> int:
    """The most attempts that were out at the same moment (from each one's start and
    duration, as Chatter saw them: the receiver keeps sleeping after a client gives up)."""
    edges = []
    for attempt in attempts:
        start = attempt.started_at.timestamp()
        edges += [(start, 1), (start + attempt.duration_ms / 1000, -1)]
    most = now = 0
    for _, step in sorted(edges, key=lambda edge: (edge[0], edge[1])):
        now += step
        most = max(most, now)
    return most


def _slow_and_fast(user, make_endpoint, receiver, *, slots: int):
    slow = make_endpoint(user, "/slow", timeout=1)
    Endpoint.objects.filter(pk=slow.pk).update(max_in_flight=slots)
    fast = make_endpoint(user, "/fast")
    receiver.decide = lambda got: Reply(delay=3) if got.path == "/slow" else Reply()
    for n in range(12):
        alert_raise(code="load", message=f"event {n}", owner_id=user.pk)
    events_pump()
    return slow, fast


@pytest.mark.django_db
def test_a_timing_out_endpoint_holds_only_its_own_slots(user, make_endpoint, receiver):
    slow, fast = _slow_and_fast(user, make_endpoint, receiver, slots=2)

    deliveries_run(seconds=2.5, concurrency=8)

    assert Delivery.objects.filter(endpoint=fast, status=DeliveryStatus.SUCCEEDED).count() == 12
    timed_out = list(DeliveryAttempt.objects.filter(delivery__endpoint=slow))
    assert timed_out and all("took too long" in a.error for a in timed_out)
    # Every fast delivery was received before the slow endpoint's first attempt had even
    # given up: none of them waited behind it.
    first_give_up = min(a.started_at + timedelta(milliseconds=a.duration_ms) for a in timed_out)
    last_fast = max(r.at for r in receiver.at("/fast"))
    assert last_fast < first_give_up.timestamp()
    assert _most_at_once(timed_out) == 2
    slow.refresh_from_db()
    assert slow.consecutive_failures == len(timed_out) and slow.is_active


@pytest.mark.django_db(transaction=True)
def test_the_in_flight_bound_holds_across_workers(user, make_endpoint, receiver):
    """Two delivery loops at once (two workers, each with its own database session) never
    have more than the endpoint's max_in_flight deliveries out to it together."""
    slow, fast = _slow_and_fast(user, make_endpoint, receiver, slots=3)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            deliveries_run(seconds=2.5, concurrency=6)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert _most_at_once(DeliveryAttempt.objects.filter(delivery__endpoint=slow)) == 3
    assert Delivery.objects.filter(endpoint=fast, status=DeliveryStatus.SUCCEEDED).count() == 12
    # Each delivery was sent by one worker at a time: one attempt per claim, numbered 1, 2, ...
    for delivery in Delivery.objects.all():
        numbers = list(delivery.attempts.values_list("number", flat=True))
        assert numbers == list(range(1, len(numbers) + 1))


@pytest.mark.django_db(transaction=True)
def test_an_endpoint_deleted_while_its_deliveries_are_in_flight_is_deleted_cleanly(
    user, api_client, make_endpoint, receiver
):
    endpoint = make_endpoint(user, "/hook")
    sending = threading.Event()

    def decide(got) -> Reply:
        sending.set()
        return Reply(delay=1)

    receiver.decide = decide
    for n in range(5):
        alert_raise(code="load", message=f"event {n}", owner_id=user.pk)
    events_pump()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            deliveries_run(seconds=3, concurrency=4)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=worker)
    thread.start()
    assert sending.wait(30)
    response = api_client.delete(f"/api/v1/webhooks/endpoints/{endpoint.pk}/")
    thread.join()

    assert response.status_code == 204
    assert errors == []
    assert not Endpoint.objects.exists() and not Delivery.objects.exists()
    assert not DeliveryAttempt.objects.exists()
