from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.db import connection

# Each thread has its own database connection, so these are races between sessions, the
# same as between web worker processes; rows must be committed for others to see them.
pytestmark = pytest.mark.django_db(transaction=True)


def run_concurrently(count: int, work: Callable[[int], None]) -> None:
    barrier = threading.Barrier(count)

    def runner(index: int) -> None:
        try:
            barrier.wait()
            work(index)
        finally:
            connection.close()

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_the_default_cache_is_the_postgres_one():
    from django.core.cache import caches

    from core.cache import PostgresCache

    assert isinstance(caches["default"], PostgresCache)


def test_concurrent_increments_are_all_counted():
    cache.set("hits", 0)

    run_concurrently(16, lambda _: [cache.incr("hits") for _ in range(25)])

    assert cache.get("hits") == 400


def test_a_rate_limit_admits_exactly_its_limit_under_concurrency():
    """The django-ratelimit pattern: add(key, 1) else incr(key); admit while <= limit."""
    limit, admitted = 50, []
    lock = threading.Lock()

    def attempt(_: int) -> None:
        count = 1 if cache.add("limit:ip", 1, timeout=60) else cache.incr("limit:ip")
        if count <= limit:
            with lock:
                admitted.append(count)

    run_concurrently(120, attempt)

    assert len(admitted) == limit
    assert sorted(admitted) == list(range(1, limit + 1))


def test_only_one_concurrent_add_wins():
    winners = []

    run_concurrently(20, lambda i: cache.add("lock", i, timeout=60) and winners.append(i))

    assert len(winners) == 1
    assert cache.get("lock") == winners[0]


def test_add_takes_over_an_expired_key_but_not_a_live_one():
    cache.set("k", "old", timeout=0)  # expires at once
    assert cache.get("k") is None
    assert cache.add("k", "new", timeout=60) is True
    assert cache.add("k", "newer", timeout=60) is False
    assert cache.get("k") == "new"


def test_incr_of_a_missing_key_raises_value_error():
    with pytest.raises(ValueError):
        cache.incr("missing")


def test_values_round_trip_with_their_types():
    value = {"a": [1, 2.5, "x"], "b": None, "flag": True}
    cache.set_many({"dict": value, "flag": True, "n": 7})

    assert cache.get_many(["dict", "flag", "n", "absent"]) == {"dict": value, "flag": True, "n": 7}
    assert cache.get("flag") is True  # a bool is not stored as a counter
    cache.delete_many(["dict", "flag"])
    assert cache.get("dict") is None and cache.has_key("n")


def test_touch_and_delete_report_what_happened():
    cache.set("t", 1, timeout=60)

    assert cache.touch("t", timeout=None) is True
    assert cache.touch("absent") is False
    assert cache.delete("t") is True
    assert cache.delete("t") is False


def test_async_incr_is_atomic_too():
    import asyncio

    cache.set("async-hits", 0)

    async def bump() -> None:
        await asyncio.gather(*(cache.aincr("async-hits") for _ in range(30)))
        await sync_to_async(lambda: connection.close())()  # the worker thread's connection

    asyncio.run(bump())

    assert cache.get("async-hits") == 30
