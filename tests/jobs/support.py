"""Helpers for the jobs tests: polling, and real django-q2 clusters on the test database."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from django.conf import settings
from django.db import connection

from jobs.models import Job


def wait_for(condition: Callable[[], object], *, timeout: float = 60, what: str = "") -> object:
    """Poll until ``condition()`` is truthy; fail (with ``what``) if it never is."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"never happened: {what}")


def job_in(job_id: int, *statuses: str) -> Callable[[], Job | None]:
    def check() -> Job | None:
        job = Job.objects.get(pk=job_id)
        return job if job.status in statuses else None

    return check


class Cluster:
    """A real `manage.py qcluster` on the test database, in its own process group."""

    def __init__(self, workers: int, env: dict[str, str]) -> None:
        log_fd, self.log_path = tempfile.mkstemp(prefix="qcluster-", suffix=".log")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=settings.BASE_DIR,
            env={
                **os.environ,
                "CHATTER_DB_NAME": connection.settings_dict["NAME"],
                "CHATTER_WORKERS": str(workers),
                "CHATTER_JOBS_HANDLER_MODULES": "tests.jobs.handlers",
                **env,
            },
            stdout=log_fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        os.close(log_fd)  # the child has its own copy

    def output(self) -> str:
        with open(self.log_path) as handle:
            return handle.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        # Workers killed mid-job never reach the sentinel's clean-up: end the whole group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        os.unlink(self.log_path)
