"""Reads for jobs: lists scoped by ownership, and the queue's statistics."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import User
from accounts.selectors import visible_to
from core.errors import NotFound
from jobs.models import Job, JobPriority, JobStatus


def job_list(
    *,
    user: User,
    status: str | None = None,
    priority: str | None = None,
    handler: str | None = None,
) -> QuerySet[Job]:
    queryset = visible_to(Job.objects.select_related("owner"), user)
    if status:
        queryset = queryset.filter(status=status)
    if priority:
        queryset = queryset.filter(priority=priority)
    if handler:
        queryset = queryset.filter(handler=handler)
    return queryset.order_by("-id")


def job_get(*, user: User, job_id: int) -> Job:
    job = visible_to(Job.objects.select_related("owner"), user).filter(pk=job_id).first()
    if job is None:
        raise NotFound("Not found.")
    return job


def job_owner(*, job_id: int) -> User | None:
    """Whom a job runs for: a handler that acts with its requester's rights reads them here
    (from the row, never from its args, which a staff member could have written)."""
    job = Job.objects.select_related("owner").filter(pk=job_id).first()
    return job.owner if job is not None else None


def jobs_running(*, handler: str, started_after: datetime | None = None) -> int:
    """How many jobs of ``handler`` are running now (that started after ``started_after``)."""
    jobs = Job.objects.filter(handler=handler, status=JobStatus.RUNNING)
    if started_after is not None:
        jobs = jobs.filter(started_at__gt=started_after)
    return jobs.count()


def live_workers() -> int:
    """Worker processes of the django-q2 clusters that reported in the last seconds."""
    from django_q.conf import Conf
    from django_q.status import Stat

    return sum(len(stat.workers) for stat in Stat.get_all() if stat.status not in (Conf.STOPPED,))


def tokens_waiting() -> int:
    """Tokens sent but not yet taken by a worker: in the broker, or in a cluster's task queue.

    While there are any, due jobs are not waiting for lost tokens, so none are re-sent."""
    from django_q.brokers import get_broker
    from django_q.status import Stat

    broker = get_broker()
    return broker.queue_size() + sum(stat.task_q_size or 0 for stat in Stat.get_all(broker))


def stall_seconds() -> float:
    return float(settings.JOBS_STALL_SECONDS)


def queue_stall(*, seconds: float | None = None) -> str | None:
    """Why the queue is stalled, or None: due jobs have waited longer than ``seconds``
    (JOBS_STALL_SECONDS) while no job started, ran or finished in that time (no worker, or
    workers that cannot take work). A busy queue, or an idle one with nothing due, is not."""
    seconds = stall_seconds() if seconds is None else seconds
    stale = timezone.now() - timedelta(seconds=seconds)
    waiting = Job.objects.filter(status=JobStatus.PENDING, available_at__lt=stale).count()
    if not waiting:
        return None
    moving = (
        Job.objects.filter(status=JobStatus.RUNNING).exists()
        or Job.objects.filter(started_at__gte=stale).exists()
        or Job.objects.filter(finished_at__gte=stale, started_at__isnull=False).exists()
    )
    if moving:
        return None
    return (
        f"{waiting} due job(s) have waited over {seconds:.0f} s and no job has started "
        f"since (live workers: {live_workers()})"
    )


def queue_wedged() -> str | None:
    """A stall (``queue_stall``) while django-q2 reports live workers: they are there and take
    nothing, so the queue is broken; what ``ready/`` fails on. With no live worker at all
    the stall is reported by the stats only: workers may be starting, or run elsewhere."""
    stall = queue_stall()
    if stall and live_workers() > 0:
        return stall
    return None


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


_WAIT = "extract(epoch FROM started_at - available_at)"
_RUN = "extract(epoch FROM finished_at - started_at)"
_STARTED_LAST_HOUR = "started_at >= clock_timestamp() - interval '1 hour'"
# Finished after running (a job cancelled while waiting is not throughput).
_FINISHED_LAST_HOUR = (
    "(finished_at >= clock_timestamp() - interval '1 hour' AND started_at IS NOT NULL)"
)
_FINISHED_LAST_MINUTE = (
    "(finished_at >= clock_timestamp() - interval '1 minute' AND started_at IS NOT NULL)"
)


def _percentile(fraction: float, value: str, where: str) -> str:
    return f"percentile_cont({fraction}) WITHIN GROUP (ORDER BY {value}) FILTER (WHERE {where})"


def job_stats(*, user: User) -> dict[str, Any]:
    """Counts by status and priority, throughput, wait/run percentiles, workers, backlog age.

    Staff see the whole queue; anyone else the same figures over their own jobs.
    """
    owner_sql, params = ("", []) if user.is_staff else ("AND owner_id = %s", [user.pk])
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT status, priority, count(*) FROM jobs_job WHERE true {owner_sql} "
            "GROUP BY status, priority",
            params,
        )
        grouped = cursor.fetchall()
        cursor.execute(
            f"""
            SELECT
              count(*) FILTER (WHERE {_FINISHED_LAST_MINUTE}),
              count(*) FILTER (WHERE {_FINISHED_LAST_HOUR}),
              {_percentile(0.5, _WAIT, _STARTED_LAST_HOUR)},
              {_percentile(0.95, _WAIT, _STARTED_LAST_HOUR)},
              {_percentile(0.5, _RUN, _FINISHED_LAST_HOUR)},
              {_percentile(0.95, _RUN, _FINISHED_LAST_HOUR)},
              greatest(0, extract(epoch FROM clock_timestamp() - min(available_at)
                                  FILTER (WHERE status = 'pending')))
            FROM jobs_job
            WHERE ({_STARTED_LAST_HOUR} OR {_FINISHED_LAST_HOUR} OR status = 'pending')
              {owner_sql}
            """,
            params,
        )
        minute, hour, wait50, wait95, run50, run95, oldest = cursor.fetchone()

    by_status = dict.fromkeys(JobStatus.values, 0)
    by_priority = {p: dict.fromkeys(JobStatus.values, 0) for p in JobPriority.values}
    for status, priority, count in grouped:
        by_status[status] += count
        by_priority[priority][status] += count
    return {
        "by_status": by_status,
        "by_priority": by_priority,
        "throughput": {
            "last_minute": minute,
            "last_hour": hour,
            "per_second_last_minute": round(minute / 60, 3),
        },
        "wait_seconds": {"p50": _seconds(wait50), "p95": _seconds(wait95)},
        "run_seconds": {"p50": _seconds(run50), "p95": _seconds(run95)},
        # busy: jobs running now (the table, not django-q2's view of its processes).
        "workers": {"live": live_workers(), "busy": by_status[JobStatus.RUNNING]},
        "stalled": queue_stall(),
        "tokens_waiting": tokens_waiting(),
        "oldest_pending_age_seconds": _seconds(oldest),
        "generated_at": timezone.now().isoformat(),
    }
