"""Maintenance: the built-in steps and the run that executes every registered step.

Why and how: docs/architecture.md, "jobs/maintenance.py".
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from jobs.models import FINISHED_STATUSES, Job
from jobs.registry import maintenance_step, maintenance_steps

logger = logging.getLogger("chatter.jobs.maintenance")


@maintenance_step("expire_cache_rows", order=10)
def expire_cache_rows() -> dict[str, int]:
    """Delete expired rows of the shared PostgreSQL cache table."""
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM chatter_cache "
            "WHERE expires IS NOT NULL AND expires <= extract(epoch FROM clock_timestamp())"
        )
        return {"deleted": cursor.rowcount}


@maintenance_step("prune_finished_jobs", order=20)
def prune_finished_jobs() -> dict[str, int]:
    """Delete finished jobs older than JOBS_RETENTION_DAYS."""
    cutoff = timezone.now() - timedelta(days=settings.JOBS_RETENTION_DAYS)
    deleted, _ = Job.objects.filter(status__in=FINISHED_STATUSES, finished_at__lt=cutoff).delete()
    return {"deleted": deleted, "retention_days": settings.JOBS_RETENTION_DAYS}


@maintenance_step("analyze", order=1000)
def analyze() -> dict[str, bool]:
    """Refresh the planner's statistics for the whole database."""
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return {"analyzed": True}


def maintenance_run(*, on_step: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Run every registered step; one failing step does not stop the others.

    Returns ``{"steps": {name: summary or {"error": ...}}, "failed": [names]}``.
    """
    steps = maintenance_steps()
    results: dict[str, Any] = {}
    failed: list[str] = []
    for index, step in enumerate(steps):
        if on_step is not None:
            on_step(index, len(steps), step.name)
        try:
            results[step.name] = step.func()
        except Exception as exc:
            logger.exception("maintenance step %s failed", step.name)
            results[step.name] = {
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
            failed.append(step.name)
    return {"steps": results, "failed": failed}
