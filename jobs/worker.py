"""The executor: what a django-q2 worker does with a token. Claim, run, record.

Why and how: docs/architecture.md, "jobs/worker.py".
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
from django.db import connections
from django.utils import timezone

from jobs.models import JobStatus
from jobs.registry import (
    JobCancelled,
    JobContext,
    JobTimeout,
    PermanentJobError,
    handler_get,
    job_preludes,
)
from jobs.services import (
    aging_offset,
    job_outcome_record,
    job_outcome_write,
    max_extended_timeout_seconds,
    retry_delay,
    tokens_send,
)

logger = logging.getLogger("chatter.jobs")

# Two-int advisory locks live in their own key space; this first key marks them as jobs'.
LOCK_NAMESPACE = 0x4A4F4253  # "JOBS"
LOCK_KEY_SQL = "({id} %% 2147483647)::int4"  # always run with parameters

HOST = socket.gethostname()

_connection: psycopg.Connection | None = None
_connection_pid: int | None = None
# Set by django-q2's pre_execute signal just before it calls the token in this process.
current_q_task_id = ""


def executor_connection() -> psycopg.Connection:
    """This process's own autocommit connection: it holds the attempt locks."""
    global _connection, _connection_pid
    if _connection is not None and _connection_pid == os.getpid() and not _connection.closed:
        return _connection
    params = connections["default"].get_connection_params()
    # psycopg's own adapters: Django's context hands jsonb back as text.
    params.pop("cursor_factory", None)
    params.pop("context", None)
    # Over TCP, let the server notice a vanished worker host within ~a minute, so its
    # locks (and jobs) are released; no effect on Unix sockets.
    # synchronous_commit=off: claims and outcomes skip the WAL flush wait. Only a crash of
    # the PostgreSQL server itself can lose the last fraction of a second of them, and a lost
    # claim or outcome means the job runs again (at least once), never that it is lost: the
    # job row itself is written by enqueue with a normal, durable commit.
    params["options"] = (
        params.get("options", "")
        + " -c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3"
        + " -c synchronous_commit=off"
    ).strip()
    _connection = psycopg.connect(**params, autocommit=True, application_name="chatter-jobs")
    _connection_pid = os.getpid()
    return _connection


def executor_connection_close() -> None:
    global _connection
    if _connection is not None and _connection_pid == os.getpid():
        _connection.close()
    _connection = None


@dataclass
class Claimed:
    id: int
    handler: str
    args: dict[str, Any]
    priority: str
    attempt: int
    max_attempts: int
    timeout_seconds: int


_CLAIM_SQL = f"""
WITH candidate AS (
    SELECT id FROM jobs_job
    WHERE status = 'pending' AND NOT (id = ANY(%(skip)s))
    ORDER BY rank_at, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), locked AS (
    SELECT id, pg_try_advisory_lock({LOCK_NAMESPACE}, {LOCK_KEY_SQL.format(id="id")}) AS ok
    FROM candidate
), claimed AS (
    UPDATE jobs_job AS j
    SET status = 'running', attempts = j.attempts + 1, started_at = clock_timestamp(),
        updated_at = clock_timestamp(), progress = 0, progress_message = '',
        worker_host = %(host)s, worker_pid = %(pid)s, q_task_id = %(task)s
    FROM locked
    WHERE j.id = locked.id AND locked.ok
    RETURNING j.id, j.handler, j.args, j.priority, j.attempts, j.max_attempts, j.timeout_seconds
)
SELECT locked.id, locked.ok, claimed.handler, claimed.args, claimed.priority,
       claimed.attempts, claimed.max_attempts, claimed.timeout_seconds
FROM locked LEFT JOIN claimed ON claimed.id = locked.id
"""


def job_claim_next(conn: psycopg.Connection | None = None) -> Claimed | None:
    """Claim the best due job for this process (holding its lock), or None when none is due."""
    conn = conn or executor_connection()
    skip: list[int] = []
    for _ in range(5):
        row = conn.execute(
            _CLAIM_SQL,
            {"skip": skip, "host": HOST, "pid": os.getpid(), "task": current_q_task_id[:32]},
        ).fetchone()
        if row is None:
            return None
        job_id, locked, handler, args, priority, attempt, max_attempts, timeout = row
        if locked:
            return Claimed(job_id, handler, args, priority, attempt, max_attempts, timeout)
        # Some live session still holds its lock (an earlier attempt's, leaked): running it
        # now could overlap that attempt, so leave it and take the next one.
        skip.append(job_id)
    return None


def _unlock(conn: psycopg.Connection, job_id: int) -> None:
    conn.execute(
        f"SELECT pg_advisory_unlock({LOCK_NAMESPACE}, {LOCK_KEY_SQL.format(id='%s')})",
        [job_id],
    )


def failure_outcome(
    *, handler: str, attempt: int, max_attempts: int, priority: str, error: str, trace: str
) -> dict[str, Any]:
    """The row fields after a failed attempt: scheduled for a retry (the handler's backoff),
    or dead."""
    now = timezone.now()
    if attempt >= max_attempts:
        return {
            "status": JobStatus.DEAD,
            "error": error,
            "traceback": trace,
            "finished_at": now,
        }
    spec = handler_get(handler)
    base, cap = (spec.retry_base, spec.retry_cap) if spec else (5.0, 600.0)
    available_at = now + timedelta(seconds=retry_delay(attempt, base=base, cap=cap))
    return {
        "status": JobStatus.SCHEDULED,
        "error": error,
        "traceback": trace,
        "available_at": available_at,
        "rank_at": available_at + aging_offset(priority),
        "dispatched_at": None,
    }


def cancelled_outcome(error: str) -> dict[str, Any]:
    """The row fields of a job that ends cancelled after a failed attempt (never retried)."""
    return {
        "status": JobStatus.CANCELLED,
        "error": f"Cancelled (the attempt ended with {error})" if error else "Cancelled",
        "finished_at": timezone.now(),
    }


def _cancel_requested(conn: psycopg.Connection, job_id: int) -> bool:
    row = conn.execute(
        "SELECT cancel_requested_at IS NOT NULL FROM jobs_job WHERE id = %s", [job_id]
    ).fetchone()
    return bool(row and row[0])


class WorkerStopping(BaseException):
    """Raised inside a handler when its worker is told to stop (SIGTERM): the job goes back."""


class _StopSignal:
    """While a handler runs, SIGTERM hands its job back instead of killing the process.

    ``make run`` stops the cluster by sending SIGTERM to all its processes at once (see
    ``chatter_project.launcher``): idle ones die at once, a busy one raises ``WorkerStopping``
    in its handler, puts the job back as pending with the attempt not counted, and exits.
    """

    def __enter__(self) -> _StopSignal:
        try:
            self.previous = signal.signal(signal.SIGTERM, self._stop)
        except ValueError:  # not the main thread
            self.previous = None
        return self

    def _stop(self, signum: int, frame: Any) -> None:
        raise WorkerStopping("the worker was told to stop")

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def handed_back_outcome(attempt: int) -> dict[str, Any]:
    """The row fields of a job whose worker stopped mid-attempt: pending again, the attempt
    not counted (it did not fail), its rank kept."""
    return {
        "status": JobStatus.PENDING,
        "attempts": attempt - 1,
        "started_at": None,
        "progress": 0,
        "progress_message": "",
        "dispatched_at": timezone.now(),
        "worker_pid": None,
    }


class _Alarm:
    """The job's timeout as SIGALRM, saving and restoring django-q2's own alarm."""

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds
        self.armed = False

    def _fire(self, signum: int, frame: Any) -> None:
        if self.armed:
            self.armed = False
            raise JobTimeout(f"exceeded its timeout of {self.seconds} s")

    def __enter__(self) -> _Alarm:
        self.started = time.monotonic()
        try:
            self.previous_handler = signal.signal(signal.SIGALRM, self._fire)
        except ValueError:  # not the main thread: only the clock's hard kill applies
            self.previous_handler = None
            return self
        self.armed = True
        self.previous_delay, _ = signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def extend(self, seconds: int) -> None:
        """Fire at ``seconds`` after the start instead (a handler extended its timeout)."""
        if not self.armed or seconds <= self.seconds:
            return
        self.seconds = seconds
        remaining = seconds - (time.monotonic() - self.started)
        signal.setitimer(signal.ITIMER_REAL, max(remaining, 0.001))

    def __exit__(self, *exc: object) -> None:
        self.armed = False
        if self.previous_handler is None:
            return
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.previous_handler)
        if self.previous_delay:
            remaining = self.previous_delay - (time.monotonic() - self.started)
            signal.setitimer(signal.ITIMER_REAL, max(remaining, 0.001))


# The row's timeout becomes elapsed (by the database's clock, as the jobs clock measures it)
# + the seconds asked for, never less than it was, at most the cap.
_EXTEND_SQL = """
UPDATE jobs_job
SET timeout_seconds = GREATEST(timeout_seconds, LEAST(%(cap)s,
        CEIL(EXTRACT(EPOCH FROM clock_timestamp() - started_at) + %(seconds)s)::int)),
    updated_at = clock_timestamp()
WHERE id = %(id)s AND attempts = %(attempt)s AND status = 'running'
RETURNING timeout_seconds
"""


def _context(conn: psycopg.Connection, job: Claimed, alarm: _Alarm) -> JobContext:
    def write_progress(percent: int, message: str) -> bool:
        row = conn.execute(
            "UPDATE jobs_job SET progress = %s, progress_message = %s, updated_at = now() "
            "WHERE id = %s AND attempts = %s AND status = 'running' "
            "RETURNING cancel_requested_at IS NOT NULL",
            [percent, message, job.id, job.attempt],
        ).fetchone()
        return bool(row and row[0])

    def read_cancelled() -> bool:
        return _cancel_requested(conn, job.id)

    def extend_timeout(seconds: float) -> int:
        row = conn.execute(
            _EXTEND_SQL,
            {
                "cap": max_extended_timeout_seconds(),
                "seconds": max(0.0, float(seconds)),
                "id": job.id,
                "attempt": job.attempt,
            },
        ).fetchone()
        if row is None:  # taken over: this attempt's budget is no longer its to change
            return alarm.seconds
        alarm.extend(row[0])
        logger.info("job %s (%s) extended its timeout to %s s", job.id, job.handler, row[0])
        return int(row[0])

    return JobContext(
        job_id=job.id,
        attempt=job.attempt,
        max_attempts=job.max_attempts,
        timeout_seconds=job.timeout_seconds,
        _write_progress=write_progress,
        _read_cancelled=read_cancelled,
        _extend_timeout=extend_timeout,
    )


def job_execute(conn: psycopg.Connection, job: Claimed) -> str:
    """Run one claimed attempt and record its outcome; returns the job's new status."""
    for prelude in job_preludes():
        try:
            prelude()
        except Exception:
            logger.exception("job prelude %s failed", getattr(prelude, "__name__", prelude))
    spec = handler_get(job.handler)
    outcome: dict[str, Any]
    try:
        if spec is None:
            raise PermanentJobError(f"no handler '{job.handler}' is registered in this worker")
        with _StopSignal(), _Alarm(job.timeout_seconds) as alarm:
            value = spec.func(_context(conn, job, alarm), **job.args)
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise PermanentJobError(f"the handler returned a non-JSON result: {exc}") from exc
        outcome = {
            "status": JobStatus.SUCCEEDED,
            "result": value,
            "progress": 100,
            "error": "",
            "traceback": "",
            "finished_at": timezone.now(),
        }
    except WorkerStopping:
        try:
            handed_back = handed_back_outcome(job.attempt)
            if job_outcome_write(
                job_id=job.id, attempt=job.attempt, outcome=handed_back, conn=conn
            ):
                tokens_send([job.id])  # the broker keeps it for the next cluster to start
        finally:
            _unlock(conn, job.id)
        logger.info("job %s (%s) handed back: the worker is stopping", job.id, job.handler)
        raise SystemExit(0) from None
    except JobCancelled as exc:
        outcome = {"status": JobStatus.CANCELLED, "error": str(exc), "finished_at": timezone.now()}
    except PermanentJobError as exc:
        outcome = {
            "status": JobStatus.FAILED,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
            "finished_at": timezone.now(),
        }
    except (Exception, JobTimeout) as exc:
        outcome = failure_outcome(
            handler=job.handler,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            priority=job.priority,
            error=f"{type(exc).__name__}: {exc}",
            trace=traceback.format_exc(),
        )
    if outcome["status"] in (JobStatus.SCHEDULED, JobStatus.DEAD, JobStatus.FAILED) and (
        _cancel_requested(conn, job.id)
    ):
        # Cancel was asked for: whatever the attempt died of, the job must not run again.
        outcome = cancelled_outcome(outcome["error"])
    try:
        job_outcome_record(
            job_id=job.id,
            attempt=job.attempt,
            handler=job.handler,
            args=job.args,
            outcome=outcome,
            conn=conn,
        )
    finally:
        _unlock(conn, job.id)
    level = logging.DEBUG if outcome["status"] == JobStatus.SUCCEEDED else logging.INFO
    logger.log(
        level, "job %s (%s) attempt %s: %s", job.id, job.handler, job.attempt, outcome["status"]
    )
    return outcome["status"]


def run_next_job() -> str | None:
    """A token's work: claim the best due job and run it. None when nothing was due."""
    conn = executor_connection()
    try:
        job = job_claim_next(conn)
    except Exception:
        # A claim that failed after taking its session lock must not leave it behind;
        # this process runs one job at a time, so no other lock of ours is in use.
        conn.execute("SELECT pg_advisory_unlock_all()")
        raise
    if job is None:
        return None
    return job_execute(conn, job)
