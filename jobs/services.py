"""Writes for jobs: enqueue, cancel, retry, and the tokens that wake django-q2 workers.

Why and how: docs/architecture.md, "jobs/services.py".
"""

from __future__ import annotations

import json
import logging
import random
from datetime import datetime, timedelta
from typing import Any

import psycopg
import psycopg.types.json
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from accounts.models import User
from core.errors import ApplicationError, Conflict, Forbidden
from core.events import EventInvalid, event_emit, event_type_get, events_wake
from core.models import event_id_new
from jobs.models import PRIORITY_RANK, Job, JobPriority, JobStatus
from jobs.registry import GiveUp, HandlerSpec, handler_get

logger = logging.getLogger("chatter.jobs")

MAX_ATTEMPTS_LIMIT = 25
TOKEN_FUNC = "jobs.tasks.run_next_job"


def max_timeout_seconds() -> int:
    return int(settings.JOBS_MAX_TIMEOUT_SECONDS)


def max_extended_timeout_seconds() -> int:
    """The longest a running handler may extend its own timeout to (``extend_timeout``):
    longer than a client may ask for at enqueue, for work whose size is known only then."""
    return int(settings.JOBS_MAX_EXTENDED_TIMEOUT_SECONDS)


def hard_kill_grace_seconds() -> int:
    return int(settings.JOBS_HARD_KILL_GRACE_SECONDS)


def token_timeout_seconds() -> int:
    # django-q2 kills a token's worker at this age. A token may claim any job, so it gets
    # the longest job timeout there can be (extensions included); per-job timeouts are enforced by jobs.worker
    # (SIGALRM) and the jobs clock (SIGKILL), which know the claimed job.
    longest = max(max_timeout_seconds(), max_extended_timeout_seconds())
    return longest + 2 * hard_kill_grace_seconds() + 30


def aging_offset(priority: str) -> timedelta:
    step = float(settings.JOBS_PRIORITY_AGING_SECONDS)
    return timedelta(seconds=step * PRIORITY_RANK[JobPriority(priority)])


def retry_delay(attempt: int, *, base: float, cap: float, jitter: float = 0.25) -> float:
    """Seconds before retrying after failed attempt ``attempt``: min(base*2^(n-1), cap) +-jitter."""
    delay = min(base * 2 ** (attempt - 1), cap)
    return max(0.0, delay * (1 + random.uniform(-jitter, jitter)))


def tokens_send(job_ids: list[int]) -> None:
    """Wake one worker per job id (each token runs whichever due job is best then)."""
    from django_q.brokers import get_broker
    from django_q.tasks import async_task

    broker = get_broker()  # one broker (one Redis client) per batch, not per token
    for job_id in job_ids:
        async_task(
            TOKEN_FUNC,
            job_id,
            q_options={
                "broker": broker,
                "timeout": token_timeout_seconds(),
                "task_name": f"job-{job_id}",
                # The Job row keeps the outcome; a django-q2 Task row per token would only
                # double the writes.
                "save": False,
            },
        )


def job_options_validate(
    spec: HandlerSpec | None,
    handler: str,
    args: dict[str, Any],
    priority: str,
    max_attempts: int | None,
    timeout: int | None,
) -> tuple[HandlerSpec, int, int]:
    """Check what ``enqueue`` was given; the handler, attempts and timeout to use, or a 400."""
    if spec is None:
        raise ApplicationError(
            f"Unknown job handler '{handler}'.",
            code="unknown_handler",
            details={"handler": [f"Unknown handler: {handler}"]},
        )
    if not isinstance(args, dict):
        raise ApplicationError(
            "Job args must be a JSON object.",
            code="invalid_args",
            details={"args": ["Must be a JSON object."]},
        )
    try:
        json.dumps(args)
    except (TypeError, ValueError) as exc:
        raise ApplicationError(
            "Job args must be JSON-serialisable (pass ids, not objects).",
            code="invalid_args",
            details={"args": [str(exc)]},
        ) from exc
    spec.check_args(args)
    if priority not in JobPriority.values:
        raise ApplicationError(
            f"Unknown priority '{priority}'.",
            code="invalid_priority",
            details={"priority": [f"One of {', '.join(JobPriority.values)}."]},
        )
    attempts = spec.max_attempts if max_attempts is None else max_attempts
    if not 1 <= attempts <= MAX_ATTEMPTS_LIMIT:
        raise ApplicationError(
            f"max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}.",
            code="invalid_max_attempts",
            details={"max_attempts": [f"Between 1 and {MAX_ATTEMPTS_LIMIT}."]},
        )
    seconds = spec.timeout if timeout is None else timeout
    if not 1 <= seconds <= max_timeout_seconds():
        raise ApplicationError(
            f"timeout must be between 1 and {max_timeout_seconds()} seconds.",
            code="invalid_timeout",
            details={"timeout": [f"Between 1 and {max_timeout_seconds()} seconds."]},
        )
    return spec, attempts, seconds


def enqueue(
    handler: str,
    *,
    args: dict[str, Any] | None = None,
    priority: str = JobPriority.NORMAL,
    max_attempts: int | None = None,
    timeout: int | None = None,
    run_at: datetime | None = None,
    dedupe_key: str | None = None,
    owner: User | None = None,
) -> Job:
    """Create a job and wake a worker once the surrounding transaction commits.

    With ``dedupe_key``, an active (pending, scheduled or running) job of the same owner and
    key is returned instead of a new one. ``run_at`` in the future makes it *scheduled*.
    """
    args = {} if args is None else args
    spec, attempts, seconds = job_options_validate(
        handler_get(handler), handler, args, priority, max_attempts, timeout
    )
    now = timezone.now()
    # A past run_at must not buy a better rank than "now".
    available_at = max(run_at, now) if run_at is not None else now
    try:
        rank_at = available_at + aging_offset(priority)
    except OverflowError as exc:  # run_at near datetime.max: the rank cannot be represented
        raise ApplicationError(
            "run_at is too far in the future.",
            code="invalid_run_at",
            details={"run_at": ["Too far in the future."]},
        ) from exc
    due = available_at <= now
    job = Job(
        handler=spec.name,
        args=args,
        priority=priority,
        status=JobStatus.PENDING if due else JobStatus.SCHEDULED,
        owner=owner,
        dedupe_key=dedupe_key or None,
        max_attempts=attempts,
        timeout_seconds=seconds,
        available_at=available_at,
        rank_at=rank_at,
        dispatched_at=now if due else None,
    )
    if dedupe_key:
        for _ in range(3):
            try:
                with transaction.atomic():
                    job.save(force_insert=True)
                break
            except IntegrityError:
                existing = Job.objects.filter(
                    owner=owner,
                    dedupe_key=dedupe_key,
                    status__in=[JobStatus.PENDING, JobStatus.SCHEDULED, JobStatus.RUNNING],
                ).first()
                if existing is not None:
                    existing.deduplicated = True  # type: ignore[attr-defined]
                    return existing
                # It finished between our insert and this read: try again.
        else:
            raise Conflict("A job with this dedupe key keeps colliding.", code="dedupe_conflict")
    else:
        job.save(force_insert=True)
    if due:
        job_id = job.pk
        transaction.on_commit(lambda: tokens_send([job_id]))
    return job


def job_create_for_user(*, user: User, handler: str, **options: Any) -> Job:
    """Enqueue on behalf of an API user: only user-enqueueable handlers, unless staff.

    ``options`` are ``enqueue``'s (args, priority, max_attempts, timeout, run_at, dedupe_key).
    """
    spec = handler_get(handler)
    if spec is not None and not spec.user_enqueueable and not user.is_staff:
        raise Forbidden(
            f"Handler '{handler}' cannot be enqueued through the API.",
            code="handler_not_allowed",
            details={"handler": [f"Not user-enqueueable: {handler}"]},
        )
    return enqueue(handler, **options, owner=user)


def job_dedupe_key_release(*, job_id: int) -> bool:
    """A running job lets go of its dedupe key, so that the next enqueue with that key makes
    a new job instead of returning this one. For a handler that works until its queue is
    empty (webhook deliveries): work that arrives after its last look is not left waiting
    behind it. Returns whether the key was released."""
    return (
        Job.objects.filter(pk=job_id, status=JobStatus.RUNNING)
        .exclude(dedupe_key=None)
        .update(dedupe_key=None, updated_at=timezone.now())
        == 1
    )


GIVE_UP_STATUSES = (JobStatus.DEAD, JobStatus.FAILED, JobStatus.CANCELLED)


def job_gave_up(
    *, job_id: int, handler: str, args: dict[str, Any], status: str, error: str
) -> None:
    """Call the handler's ``on_give_up`` hook for a job that just ended dead, failed or cancelled.

    Called by whoever wrote that final status (worker, clock, cancel), after the write. A hook
    that fails is logged: the job's own outcome is already recorded and stays as it is.
    """
    spec = handler_get(handler)
    if spec is None or spec.on_give_up is None or status not in GIVE_UP_STATUSES:
        return
    try:
        spec.on_give_up(
            GiveUp(job_id=job_id, handler=handler, args=dict(args), status=status, error=error)
        )
    except Exception:
        logger.exception("on_give_up of job %s (%s) failed", job_id, handler)


# The ends of a job that are events (job.completed, job.failed; jobs/events.py).
EVENT_FOR_STATUS = {
    JobStatus.SUCCEEDED: "job.completed",
    JobStatus.FAILED: "job.failed",
    JobStatus.DEAD: "job.failed",
}
_EVENT_COLUMNS = "owner_id, handler, priority, attempts, error, created_at, finished_at"


def _job_event(row: tuple[Any, ...], job_id: int, status: str) -> dict[str, Any] | None:
    """The event for a job that has just ended (``row``: _EVENT_COLUMNS), or None."""
    owner_id, handler, priority, attempts, error, created_at, finished_at = row
    spec = handler_get(handler)
    if status not in EVENT_FOR_STATUS or (spec is not None and not spec.emit_events):
        return None
    return {
        "type": EVENT_FOR_STATUS[status],
        "owner_id": owner_id,
        "data": {
            "id": job_id,
            "handler": handler,
            "status": status,
            "priority": priority,
            "attempts": attempts,
            "error": (error or "")[:1000],
            "created_at": created_at,
            "finished_at": finished_at,
        },
    }


def _iso(column: str) -> str:
    return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


# The worker's outcome and its event in one statement (one round trip, as the outcome alone
# was): the event's data is built from the row just written, in the shape jobs/events.py
# declares (tests/webhooks/test_events.py checks it against the schema).
_OUTCOME_WITH_EVENT_SQL = f"""
WITH ended AS (
    UPDATE jobs_job SET {{assignments}}
    WHERE id = %(job_id)s AND attempts = %(attempt)s AND status = 'running'
    RETURNING id, owner_id, handler, status, priority, attempts, error, created_at, finished_at
), event AS (
    INSERT INTO core_event
        (id, type, owner_id, data, created_at, dispatched_at, dispatch_attempts, dispatch_error)
    SELECT %(event_id)s, %(event_type)s::text, owner_id,
           jsonb_build_object(
               'id', id, 'handler', handler, 'status', status, 'priority', priority,
               'attempts', attempts, 'error', left(error, 1000),
               'created_at', {_iso("created_at")}, 'finished_at', {_iso("finished_at")}),
           %(now)s, NULL, 0, ''
    FROM ended WHERE %(emit)s::boolean
    RETURNING owner_id
)
SELECT (SELECT count(*) FROM ended), (SELECT bool_or(owner_id IS NOT NULL) FROM event)
"""


def _event_type_for(handler: str, status: str) -> str | None:
    spec = handler_get(handler) if handler else None
    if status not in EVENT_FOR_STATUS or spec is None or not spec.emit_events:
        return None
    return EVENT_FOR_STATUS[status]


def job_outcome_write(
    *,
    job_id: int,
    attempt: int,
    outcome: dict[str, Any],
    conn: psycopg.Connection | None = None,
    handler: str = "",
) -> bool:
    """Write an attempt's outcome, fenced: only if that attempt still runs the job (a late
    write from an attempt taken over changes nothing). Through ``conn`` (a worker's own
    session) or Django's connection. A final outcome of ``handler``'s job is also a
    ``job.completed`` or ``job.failed`` event, written with it. Returns whether it was
    written."""
    fields = {**outcome, "updated_at": timezone.now()}
    status = str(outcome.get("status", ""))
    if conn is None:
        with transaction.atomic():
            written = (
                Job.objects.filter(pk=job_id, status=JobStatus.RUNNING, attempts=attempt).update(
                    **fields
                )
                == 1
            )
            if written and status in EVENT_FOR_STATUS:
                row = Job.objects.filter(pk=job_id).values_list(*_EVENT_COLUMNS.split(", "))
                event = _job_event(row[0], job_id, status)
                if event is not None:
                    event_emit(**event)
        return written
    assignments = ", ".join(f"{name} = %({name})s" for name in fields)
    params = {
        name: (psycopg.types.json.Jsonb(v) if name == "result" else v) for name, v in fields.items()
    }
    event_type = _event_type_for(handler, status)
    if event_type is not None and event_type_get(event_type) is None:
        raise EventInvalid(f"unknown event type {event_type!r}")
    written, users_event = conn.execute(
        _OUTCOME_WITH_EVENT_SQL.format(assignments=assignments),
        {
            **params,
            "job_id": job_id,
            "attempt": attempt,
            "event_id": event_id_new(),
            "event_type": event_type,
            "emit": event_type is not None,
            "now": timezone.now(),
        },
    ).fetchone()
    # A user's job wakes the dispatcher at once; a system job's event (owner-less: only
    # operators' endpoints take it) waits for the webhooks clock step, at most a second, so
    # that a backlog of system jobs is not slowed by a wake per job.
    if users_event:
        events_wake()
    return bool(written)


def job_outcome_record(
    *,
    job_id: int,
    attempt: int,
    handler: str,
    args: dict[str, Any],
    outcome: dict[str, Any],
    conn: psycopg.Connection | None = None,
) -> bool:
    """Record how an attempt ended (the worker's outcome, the clock's reap): the fenced
    write, then, if it was written and is final without success, the handler's
    ``on_give_up``. Returns whether it was written."""
    written = job_outcome_write(
        job_id=job_id, attempt=attempt, outcome=outcome, conn=conn, handler=handler
    )
    if written:
        job_gave_up(
            job_id=job_id,
            handler=handler,
            args=args,
            status=outcome["status"],
            error=outcome.get("error", ""),
        )
    return written


def job_cancel(*, job: Job) -> Job:
    """Cancel: a waiting job never runs; a running one gets its cancel flag set."""
    now = timezone.now()
    updated = Job.objects.filter(
        pk=job.pk, status__in=[JobStatus.PENDING, JobStatus.SCHEDULED]
    ).update(
        status=JobStatus.CANCELLED,
        finished_at=now,
        cancel_requested_at=now,
        updated_at=now,
    )
    if updated:
        job_gave_up(
            job_id=job.pk,
            handler=job.handler,
            args=job.args,
            status=JobStatus.CANCELLED,
            error="Cancelled before it ran.",
        )
    else:
        updated = Job.objects.filter(
            pk=job.pk, status=JobStatus.RUNNING, cancel_requested_at__isnull=True
        ).update(cancel_requested_at=now, updated_at=now)
    job.refresh_from_db()
    if not updated and job.status != JobStatus.RUNNING:
        raise Conflict(
            f"A {job.status} job cannot be cancelled.",
            code="not_cancellable",
            details={"status": job.status},
        )
    return job


def job_retry(*, job: Job) -> Job:
    """Run a finished job (failed, dead, cancelled, even succeeded) again, with fresh attempts."""
    now = timezone.now()
    try:
        with transaction.atomic():
            updated = _job_requeue(job, now)
    except IntegrityError as exc:
        # Another active job holds the same dedupe key: two would break "one active job per
        # key", so the retry is refused like any other conflict.
        raise Conflict(
            "Another active job has the same dedupe key; retry this one once it has finished.",
            code="dedupe_conflict",
            details={"dedupe_key": job.dedupe_key},
        ) from exc
    job.refresh_from_db()
    if not updated:
        raise Conflict(
            f"A {job.status} job is still active; only finished jobs can be retried.",
            code="not_retryable",
            details={"status": job.status},
        )
    return job


def _job_requeue(job: Job, now: datetime) -> int:
    updated = Job.objects.filter(
        pk=job.pk,
        status__in=[JobStatus.FAILED, JobStatus.DEAD, JobStatus.CANCELLED, JobStatus.SUCCEEDED],
    ).update(
        status=JobStatus.PENDING,
        attempts=0,
        available_at=now,
        rank_at=now + aging_offset(job.priority),
        dispatched_at=now,
        cancel_requested_at=None,
        result=None,
        error="",
        traceback="",
        progress=0,
        progress_message="",
        started_at=None,
        finished_at=None,
        updated_at=now,
    )
    if updated:
        transaction.on_commit(lambda: tokens_send([job.pk]))
    return updated


def jobs_cancel(*, queryset: QuerySet[Job]) -> int:
    """Cancel every active job in ``queryset``; returns how many were cancelled or flagged."""
    count = 0
    for job in queryset.filter(
        Q(status__in=[JobStatus.PENDING, JobStatus.SCHEDULED])
        | Q(status=JobStatus.RUNNING, cancel_requested_at__isnull=True)
    ):
        job_cancel(job=job)
        count += 1
    return count


def jobs_retry(*, queryset: QuerySet[Job]) -> int:
    """Retry every finished job in ``queryset``; returns how many were re-queued."""
    count = 0
    for job in queryset.exclude(
        status__in=[JobStatus.PENDING, JobStatus.SCHEDULED, JobStatus.RUNNING]
    ):
        try:
            job_retry(job=job)
        except Conflict:  # another active job holds its dedupe key: leave this one
            continue
        count += 1
    return count


def jobs_run_now(*, queryset: QuerySet[Job]) -> int:
    """Make scheduled jobs due at once (the jobs clock sends their tokens)."""
    now = timezone.now()
    count = 0
    for job in queryset.filter(status=JobStatus.SCHEDULED):
        count += Job.objects.filter(pk=job.pk, status=JobStatus.SCHEDULED).update(
            available_at=now, rank_at=now + aging_offset(job.priority), updated_at=now
        )
    return count


MAINTENANCE_SCHEDULE_NAME = "chatter.jobs.maintenance"


def maintenance_schedule_ensure() -> None:
    """Make sure django-q2's scheduler enqueues the maintenance job every interval."""
    from django_q.models import Schedule

    minutes = int(settings.JOBS_MAINTENANCE_INTERVAL_MINUTES)
    schedule, created = Schedule.objects.get_or_create(
        name=MAINTENANCE_SCHEDULE_NAME,
        defaults={
            "func": "jobs.tasks.maintenance_enqueue",
            "schedule_type": Schedule.MINUTES,
            "minutes": minutes,
            "repeats": -1,
            "next_run": timezone.now() + timedelta(minutes=1),
        },
    )
    if not created and (schedule.minutes != minutes or schedule.repeats != -1):
        schedule.minutes = minutes
        schedule.repeats = -1
        schedule.save(update_fields=["minutes", "repeats"])
