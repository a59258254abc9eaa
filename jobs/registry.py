"""The registries other apps put their background work into: job handlers and maintenance steps.

``jobs`` never imports a higher app; each app registers from its own ``tasks.py`` (imported by
``JobsConfig.ready``, together with the modules in ``settings.JOBS_HANDLER_MODULES``)::

    from jobs.registry import JobContext, PermanentJobError, job_handler, maintenance_step

    @job_handler("document_processing", timeout=600, max_attempts=5)
    def process_document(ctx: JobContext, *, document_id: int) -> dict:
        for done, total in knowledge.services.document_process(document_id=document_id):
            ctx.progress(100 * done // total, f"{done}/{total} chunks")
            ctx.raise_if_cancelled()
        return {"chunks": total}

    @maintenance_step("expire_exports")
    def expire_exports() -> dict:
        return {"deleted": datamgmt.services.export_expire()}

The handler contract
--------------------
- **Arguments.** A handler receives a ``JobContext`` as its one positional argument and the
  job's ``args`` (a JSON object) as keyword arguments: pass ids, never model instances, and
  load rows inside the handler. ``enqueue`` checks the args against the signature.
- **Result.** Whatever it returns is stored as the job's ``result``; it must be JSON-serialisable
  (``None`` is fine). A value that is not fails the job permanently.
- **Progress.** ``ctx.progress(percent, message)`` writes 0-100 and a short message to the
  job's row at once (visible in the API and the admin while it runs).
- **Cancellation.** A cancelled pending job never starts. For a running one the cancel sets a
  flag: ``ctx.cancelled`` reads it, ``ctx.raise_if_cancelled()`` raises ``JobCancelled``,
  which ends the job as *cancelled*. A handler that never checks simply runs to completion.
  A job whose cancel was requested is never retried: whatever its attempt ends with (an
  error, a timeout, its worker's death), it ends *cancelled*.
- **Failure.** Any exception fails the attempt; the job is retried with exponential backoff
  and jitter until ``max_attempts``, then it is *dead* (traceback kept). Raise
  ``PermanentJobError`` for failures a retry cannot fix: the job is *failed* at once.
- **Timeout.** At ``timeout`` seconds ``JobTimeout`` (a ``BaseException``, so ``except
  Exception`` cannot swallow it) is raised inside the handler; a handler stuck where Python
  cannot interrupt it (C code holding the GIL) has its worker process killed by the jobs clock
  shortly after. Either way the attempt counts as failed. A handler that learns how long it
  needs once running calls ``ctx.extend_timeout(seconds)`` (at most
  ``JOBS_MAX_EXTENDED_TIMEOUT_SECONDS``, default 4 h); the job keeps that budget for its retries.
- **Giving up.** ``on_give_up(outcome)`` (optional) is called once a job ends for good without
  succeeding: *dead*, *failed* or *cancelled*, from wherever that is decided (the worker, the
  jobs clock's reaper, the cancel of a waiting job). It gets a ``GiveUp`` (job id, args,
  status, error) and is where a handler's domain object is put in a final state (a document
  ``failed`` with the reason), so nothing stays "processing" behind a dead job. It runs after
  the job's row is final, may run in any process, and must be idempotent; its own failure is
  logged and changes nothing about the job.
- **At least once.** An attempt whose worker dies is retried, so a handler must be idempotent:
  running it again after a partial run must be harmless. Two attempts of one job never run at
  the same time.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.errors import ApplicationError

DEFAULT_TIMEOUT_SECONDS = 300
DEFAULT_MAX_ATTEMPTS = 3


class PermanentJobError(Exception):
    """Raised by a handler for a failure no retry can fix: the job fails at once."""


class JobCancelled(Exception):
    """Raised (by ``ctx.raise_if_cancelled``) to end a job whose cancel was requested."""


class JobTimeout(BaseException):
    """Raised inside a handler when its job's timeout elapses."""


@dataclass(frozen=True)
class GiveUp:
    """What ``on_give_up`` hooks receive: a job that ended without succeeding."""

    job_id: int
    handler: str
    args: dict[str, Any]
    status: str  # "dead", "failed" or "cancelled"
    error: str


@dataclass
class JobContext:
    """What a running handler knows about its job and how it talks back."""

    job_id: int
    attempt: int
    max_attempts: int
    timeout_seconds: int
    _write_progress: Callable[[int, str], bool] = field(repr=False)
    _read_cancelled: Callable[[], bool] = field(repr=False)
    _extend_timeout: Callable[[float], int] = field(repr=False)

    def progress(self, percent: int, message: str = "") -> None:
        """Record progress (0-100) and a short message on the job's row, committed at once."""
        self._write_progress(max(0, min(100, int(percent))), message[:200])

    @property
    def cancelled(self) -> bool:
        """Whether a cancel was requested for this job (read from the database each time)."""
        return self._read_cancelled()

    def raise_if_cancelled(self) -> None:
        if self.cancelled:
            raise JobCancelled(f"job {self.job_id} was cancelled")

    def extend_timeout(self, seconds: float) -> int:
        """Give this attempt at least ``seconds`` more from now: its timeout becomes the time
        it has run plus ``seconds``, never shorter than it was, at most
        ``JOBS_MAX_EXTENDED_TIMEOUT_SECONDS``. For a handler that learns how much work it
        has once it has started (a document, once split). Written to the job's row, which
        the jobs clock reads, and re-arms this worker's alarm. Returns the timeout now."""
        self.timeout_seconds = self._extend_timeout(seconds)
        return self.timeout_seconds


@dataclass(frozen=True)
class HandlerSpec:
    name: str
    func: Callable[..., Any]
    user_enqueueable: bool
    timeout: int
    max_attempts: int
    retry_base: float
    retry_cap: float
    description: str
    on_give_up: Callable[[GiveUp], None] | None = None

    def check_args(self, args: dict[str, Any]) -> None:
        """Raise ApplicationError (400) unless these args fit the handler's signature."""
        try:
            inspect.signature(self.func).bind(None, **args)
        except TypeError as exc:
            raise ApplicationError(
                f"The arguments do not fit handler '{self.name}': {exc}.",
                code="invalid_args",
                details={"args": [str(exc)]},
            ) from exc


@dataclass(frozen=True)
class MaintenanceStep:
    name: str
    func: Callable[[], Any]
    order: int


_handlers: dict[str, HandlerSpec] = {}
_maintenance_steps: dict[str, MaintenanceStep] = {}


def job_handler(
    name: str,
    *,
    user_enqueueable: bool = False,
    timeout: int = DEFAULT_TIMEOUT_SECONDS,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    retry_base: float = 5.0,
    retry_cap: float = 600.0,
    description: str = "",
    on_give_up: Callable[[GiveUp], None] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``func(ctx, **args)`` as the handler called ``name``.

    ``user_enqueueable`` lets any API user enqueue it (otherwise staff only); ``timeout`` and
    ``max_attempts`` are the defaults ``enqueue`` uses; a failed attempt n is retried after
    ``min(retry_base * 2**(n-1), retry_cap)`` seconds, +-25% jitter. ``on_give_up`` is
    called when a job of this handler ends dead, failed or cancelled (see the module doc).
    """

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        existing = _handlers.get(name)
        if existing is not None and existing.func is not func:
            raise ValueError(f"job handler {name!r} is already registered by {existing.func}")
        _handlers[name] = HandlerSpec(
            name=name,
            func=func,
            user_enqueueable=user_enqueueable,
            timeout=timeout,
            max_attempts=max_attempts,
            retry_base=retry_base,
            retry_cap=retry_cap,
            description=description or (inspect.getdoc(func) or "").split("\n")[0],
            on_give_up=on_give_up,
        )
        return func

    return register


def maintenance_step(
    name: str, *, order: int = 100
) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Register ``func()`` to run in every maintenance job (lowest ``order`` first).

    A step returns a JSON-serialisable summary (e.g. ``{"deleted": 12}``) and must be safe to
    run again at any time; one failing step does not stop the others.
    """

    def register(func: Callable[[], Any]) -> Callable[[], Any]:
        existing = _maintenance_steps.get(name)
        if existing is not None and existing.func is not func:
            raise ValueError(f"maintenance step {name!r} is already registered")
        _maintenance_steps[name] = MaintenanceStep(name=name, func=func, order=order)
        return func

    return register


def handler_get(name: str) -> HandlerSpec | None:
    return _handlers.get(name)


def handler_names() -> list[str]:
    return sorted(_handlers)


def maintenance_steps() -> list[MaintenanceStep]:
    return sorted(_maintenance_steps.values(), key=lambda step: (step.order, step.name))
