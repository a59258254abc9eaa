"""Job handlers for the tests. Worker processes the tests start import this module through
CHATTER_JOBS_HANDLER_MODULES; the test process imports it from conftest."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from django.db.models.functions import Now
from django.utils import timezone

from jobs.models import Job
from jobs.registry import GiveUp, JobContext, JobTimeout, PermanentJobError, job_handler


@job_handler("test.record", user_enqueueable=True, timeout=30)
def record(ctx: JobContext, **args: Any) -> dict[str, Any]:
    return {"args": args, "attempt": ctx.attempt}


@job_handler("test.fail_until", timeout=30, max_attempts=5, retry_base=0.01, retry_cap=0.05)
def fail_until(ctx: JobContext, *, succeed_on: int) -> dict[str, int]:
    if ctx.attempt < succeed_on:
        raise RuntimeError(f"attempt {ctx.attempt} fails on purpose")
    return {"attempt": ctx.attempt}


@job_handler("test.permanent", max_attempts=5)
def permanent(ctx: JobContext) -> None:
    raise PermanentJobError("this input can never work")


@job_handler("test.sleep", max_attempts=1)
def sleep(ctx: JobContext, *, seconds: float) -> dict[str, float]:
    time.sleep(seconds)
    return {"slept": seconds}


@job_handler("test.not_json", max_attempts=3)
def not_json(ctx: JobContext) -> object:
    return object()


@job_handler("test.until_cancelled", timeout=60, max_attempts=1)
def until_cancelled(ctx: JobContext) -> None:
    ctx.progress(10, "waiting for a cancel")
    while True:
        ctx.raise_if_cancelled()
        time.sleep(0.05)


@job_handler("test.hang_first_attempt", timeout=120, max_attempts=3, retry_base=0.2, retry_cap=0.5)
def hang_first_attempt(ctx: JobContext) -> dict[str, int]:
    """The first attempt reports that it started and then never ends; later ones succeed."""
    if ctx.attempt == 1:
        ctx.progress(1, "attempt 1 started")
        while True:
            time.sleep(0.1)
    return {"attempt": ctx.attempt}


@job_handler("test.stuck_in_c", timeout=1, max_attempts=1)
def stuck_in_c(ctx: JobContext) -> None:
    """One C loop holding the GIL for ~20 minutes: Python signal handlers never get to run."""
    ctx.progress(1, "summing")
    sum(range(10**11))


# Every GiveUp the hook of test.gives_up receives (in the process that decided it).
GAVE_UP: list[GiveUp] = []


@job_handler(
    "test.gives_up",
    timeout=30,
    max_attempts=2,
    retry_base=0.01,
    retry_cap=0.05,
    on_give_up=GAVE_UP.append,
)
def gives_up(ctx: JobContext, *, how: str) -> None:
    """Fails in the way ``how`` says; its hook records how the job ended."""
    if how == "cancel_then_fail":
        Job.objects.filter(pk=ctx.job_id).update(cancel_requested_at=timezone.now())
        raise RuntimeError("fails after its cancel was requested")
    if how == "cancel_then_timeout":
        Job.objects.filter(pk=ctx.job_id).update(cancel_requested_at=timezone.now())
        raise JobTimeout("exceeded its timeout of 30 s")
    if how == "permanent":
        raise PermanentJobError("this input can never work")
    if how == "swallow_timeout":
        try:
            raise JobTimeout("exceeded its timeout of 30 s")
        except Exception:  # what a careless handler writes: it must not catch the timeout
            return None
    raise RuntimeError("fails every time")


@job_handler("test.outlives_its_timeout", timeout=2, max_attempts=1)
def outlives_its_timeout(ctx: JobContext, *, extend: bool, older_than: float = 4) -> dict[str, int]:
    """Runs until the database says its attempt started over ``older_than`` seconds ago
    (past its 2 s timeout), having first extended its timeout when ``extend``."""
    if extend:
        ctx.extend_timeout(120)
    ctx.progress(1, "working")
    while not Job.objects.filter(
        pk=ctx.job_id, started_at__lt=Now() - timedelta(seconds=older_than)
    ).exists():
        time.sleep(0.05)
    return {"timeout_seconds": ctx.timeout_seconds}
