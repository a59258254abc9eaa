from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

import tests.jobs.handlers  # noqa: F401  (registers the test handlers in this process)
from jobs import worker
from tests.jobs.support import Cluster


@pytest.fixture(autouse=True)
def _close_executor_connection() -> Iterator[None]:
    yield
    worker.executor_connection_close()


@pytest.fixture
def cluster(transactional_db: None) -> Iterator[Callable[..., Cluster]]:
    started: list[Cluster] = []

    def start(workers: int = 1, **env: str) -> Cluster:
        started.append(Cluster(workers, env))
        return started[-1]

    yield start
    for running in started:
        running.stop()
