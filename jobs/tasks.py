"""Job handlers of the jobs app, and the functions django-q2 itself calls. All thin."""

from __future__ import annotations

from typing import Any

from jobs import worker
from jobs.maintenance import maintenance_run
from jobs.models import JobPriority
from jobs.registry import JobContext, job_handler
from jobs.services import enqueue


# --- called by django-q2 -------------------------------------------------------------------
def run_next_job(job_id: int | None = None) -> str | None:
    """A token: run the best due job (``job_id`` only says who the token was sent for)."""
    return worker.run_next_job()


def maintenance_enqueue() -> int:
    """The maintenance Schedule's function: one maintenance job at a time (dedupe key)."""
    return enqueue(
        "maintenance", priority=JobPriority.LOW, dedupe_key="maintenance", timeout=1800
    ).pk


# --- handlers ------------------------------------------------------------------------------
class MaintenanceStepsFailed(Exception):
    pass


@job_handler("maintenance", timeout=1800, max_attempts=3, retry_base=60)
def maintenance(ctx: JobContext) -> dict[str, Any]:
    """ANALYZE, expired cache rows, old finished jobs, and every app's registered steps."""

    def on_step(index: int, total: int, name: str) -> None:
        ctx.progress(100 * index // total, name)

    summary = maintenance_run(on_step=on_step)
    if summary["failed"]:
        # The whole run is retried; steps are idempotent.
        raise MaintenanceStepsFailed(f"steps failed: {', '.join(summary['failed'])}: {summary}")
    return summary


@job_handler("echo", user_enqueueable=True, timeout=10, max_attempts=1)
def echo(ctx: JobContext, **args: Any) -> dict[str, Any]:
    """Return the args: a round trip through the queue to check that workers run jobs."""
    return args
