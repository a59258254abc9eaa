"""The jobs clock: the one loop beside django-q2 (``manage.py jobs_clock``, run by ``make run``).

Why and how: docs/architecture.md, "jobs/clock.py".
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from datetime import timedelta
from typing import Any

import psutil
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from jobs.models import Job, JobStatus
from jobs.registry import clock_steps
from jobs.selectors import live_workers, queue_stall, tokens_waiting
from jobs.services import hard_kill_grace_seconds, job_outcome_record, tokens_send
from jobs.worker import HOST, LOCK_KEY_SQL, LOCK_NAMESPACE, cancelled_outcome, failure_outcome

logger = logging.getLogger("chatter.jobs.clock")

BATCH = 500


def jobs_promote_due() -> int:
    """Make due scheduled jobs pending and send their tokens."""
    now = timezone.now()
    with transaction.atomic():
        ids = list(
            Job.objects.select_for_update(skip_locked=True)
            .filter(status=JobStatus.SCHEDULED, available_at__lte=now)
            .order_by("rank_at", "id")
            .values_list("id", flat=True)[:BATCH]
        )
        if ids:
            Job.objects.filter(id__in=ids).update(
                status=JobStatus.PENDING, dispatched_at=now, updated_at=now
            )
            transaction.on_commit(lambda: tokens_send(ids))
    return len(ids)


def _lock_is_free(job_id: int) -> bool:
    """True when no session holds the job's attempt lock (its worker is gone)."""
    key = LOCK_KEY_SQL.format(id="%s")
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT CASE WHEN pg_try_advisory_lock({LOCK_NAMESPACE}, {key}) "
            f"THEN pg_advisory_unlock({LOCK_NAMESPACE}, {key}) ELSE false END",
            [job_id, job_id],
        )
        return bool(cursor.fetchone()[0])


def _kill_hung_worker(job: Job) -> bool:
    # The lock is held, so the process that claimed the job (worker_pid) is alive.
    if job.worker_host != HOST or not job.worker_pid or job.worker_pid == os.getpid():
        return False
    if not psutil.pid_exists(job.worker_pid):
        return False
    logger.warning(
        "job %s exceeded its timeout of %s s; killing worker %s",
        job.pk,
        job.timeout_seconds,
        job.worker_pid,
    )
    os.kill(job.worker_pid, signal.SIGKILL)
    return True


def jobs_reap() -> dict[str, int]:
    """Re-queue (or bury) running jobs whose worker died; kill workers hung past timeout."""
    now = timezone.now()
    grace = timedelta(seconds=hard_kill_grace_seconds())
    reaped = killed = 0
    for job in Job.objects.filter(status=JobStatus.RUNNING).order_by("id"):
        assert job.started_at is not None
        deadline = job.started_at + timedelta(seconds=job.timeout_seconds)
        if not _lock_is_free(job.pk):
            if now > deadline + grace and _kill_hung_worker(job):
                killed += 1
            continue
        if now > deadline:
            error = f"JobTimeout: exceeded its timeout of {job.timeout_seconds} s; worker killed"
        else:
            error = f"WorkerLost: the worker process ({job.worker_host} pid {job.worker_pid}) died"
        if job.cancel_requested_at is not None:
            outcome = cancelled_outcome(error)  # a cancelled job is never retried
        else:
            outcome = failure_outcome(
                handler=job.handler,
                attempt=job.attempts,
                max_attempts=job.max_attempts,
                priority=job.priority,
                error=error,
                trace="",
            )
        # Fenced by the attempt: if the worker finished after all, this changes nothing.
        reaped += job_outcome_record(
            job_id=job.pk,
            attempt=job.attempts,
            handler=job.handler,
            args=job.args,
            outcome=outcome,
        )
    return {"reaped": reaped, "killed": killed}


def jobs_redispatch_lost() -> int:
    """Send tokens again for due jobs that idle workers have not picked up for a while."""
    now = timezone.now()
    stale = now - timedelta(seconds=float(settings.JOBS_REDISPATCH_SECONDS))
    if Job.objects.filter(status=JobStatus.RUNNING).exists():
        return 0
    if Job.objects.filter(finished_at__gt=stale).exists():
        return 0  # workers are taking jobs: their tokens are not lost
    if live_workers() == 0:
        return 0  # nobody to wake: tokens would only pile up in the broker
    if tokens_waiting() > 0:
        return 0  # tokens are in the broker or a cluster's queue: not lost; more would pile up
    with transaction.atomic():
        ids = list(
            Job.objects.select_for_update(skip_locked=True)
            .filter(status=JobStatus.PENDING)
            .filter(Q(dispatched_at__isnull=True) | Q(dispatched_at__lt=stale))
            .order_by("rank_at", "id")
            .values_list("id", flat=True)[:BATCH]
        )
        if ids:
            Job.objects.filter(id__in=ids).update(dispatched_at=now)
            transaction.on_commit(lambda: tokens_send(ids))
    if ids:
        logger.warning("re-sent %s lost job token(s)", len(ids))
    return len(ids)


def clusters_restart_wedged() -> int:
    """Kill this host's django-q2 clusters when the queue has been stalled for a long time.

    The last resort: django-q2's queues no longer wedge when a process dies (jobs.queues),
    but if due jobs still wait ``JOBS_CLUSTER_RESTART_SECONDS`` (default 120) while live
    workers take none (an unknown wedge, workers stopped), every cluster on this host is
    SIGKILLed with its processes, and its supervisor (``make run``, systemd) starts it
    again. Nothing is lost: jobs, locks and attempts are in PostgreSQL. Returns how many
    clusters were killed."""
    from django_q.status import Stat

    window = float(settings.JOBS_CLUSTER_RESTART_SECONDS)
    if not queue_stall(seconds=window):
        return 0
    killed = 0
    for stat in Stat.get_all():
        if stat.host != HOST or not stat.pid or stat.pid == os.getpid():
            continue
        try:
            main = psutil.Process(stat.pid)
            processes = [*main.children(recursive=True), main]
        except psutil.Error:
            continue
        logger.error(
            "the job queue has been stalled for over %s s with live workers; "
            "killing cluster %s (pid %s) so that it is restarted",
            window,
            stat.cluster_id,
            stat.pid,
        )
        for process in processes:
            with contextlib.suppress(psutil.Error):
                process.kill()
        killed += 1
    return killed


class Clock:
    """The loop; ``tick()`` is what a test calls directly."""

    def __init__(self, interval: float | None = None) -> None:
        self.interval = interval or float(settings.JOBS_CLOCK_INTERVAL_SECONDS)
        self.stop_event = threading.Event()
        self.ticks = 0
        self.steps_last_run: dict[str, float] = {}

    def tick(self) -> dict[str, Any]:
        summary: dict[str, Any] = {"promoted": jobs_promote_due(), **jobs_reap()}
        # Reconciling reads the cluster stats: every ~5 s is plenty.
        if self.ticks % max(1, round(5 / self.interval)) == 0:
            summary["redispatched"] = jobs_redispatch_lost()
            summary["clusters_restarted"] = clusters_restart_wedged()
        summary.update(self.run_steps())
        self.ticks += 1
        return summary

    def run_steps(self) -> dict[str, Any]:
        """Other apps' clock steps (``jobs.registry.clock_step``) that are due."""
        results: dict[str, Any] = {}
        for step in clock_steps():
            now = time.monotonic()
            if now - self.steps_last_run.get(step.name, float("-inf")) < step.every_seconds:
                continue
            self.steps_last_run[step.name] = now
            try:
                results[step.name] = step.func()
            except Exception:  # one app's step must not stop the clock or the other steps
                logger.exception("clock step %s failed", step.name)
                results[step.name] = "failed"
        return results

    def stop(self, *args: object) -> None:
        self.stop_event.set()

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        logger.info("jobs clock running every %s s", self.interval)
        while not self.stop_event.is_set():
            try:
                self.tick()
            except Exception:  # the database restarting must not end the clock
                logger.exception("jobs clock tick failed")
            finally:
                connection.close()  # back to the pool between ticks
            self.stop_event.wait(self.interval)
        logger.info("jobs clock stopped")
