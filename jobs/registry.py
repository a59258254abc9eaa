"""The registries other apps put their background work into: job handlers and maintenance steps.

Why and how: docs/architecture.md, "jobs/registry.py".
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
    # Whether its jobs' ends are events (job.completed, job.failed): not for the jobs that
    # deliver events (webhooks), whose every run would otherwise emit another one to deliver.
    emit_events: bool = True

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


@dataclass(frozen=True)
class ClockStep:
    name: str
    func: Callable[[], Any]
    every_seconds: float


_handlers: dict[str, HandlerSpec] = {}
_maintenance_steps: dict[str, MaintenanceStep] = {}
_clock_steps: dict[str, ClockStep] = {}
_preludes: dict[str, Callable[[], Any]] = {}


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
    emit_events: bool = True,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``func(ctx, **args)`` as the handler called ``name``.

    ``user_enqueueable`` lets any API user enqueue it (otherwise staff only); ``timeout`` and
    ``max_attempts`` are the defaults ``enqueue`` uses; a failed attempt n is retried after
    ``min(retry_base * 2**(n-1), retry_cap)`` seconds, +-25% jitter. ``on_give_up`` is
    called when a job of this handler ends dead, failed or cancelled (see the module doc).
    ``emit_events=False``: its jobs' ends are not ``job.completed``/``job.failed`` events.
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
            emit_events=emit_events,
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


def clock_step(
    name: str, *, every_seconds: float = 1.0
) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Register ``func()`` to run in the jobs clock's loop every ``every_seconds`` (at most
    once per tick): periodic work too frequent for a schedule, like finding due webhook
    retries. A step must be quick (it delays the clock's own work), safe to run in several
    clocks at once (conditional updates, ``SKIP LOCKED``), and return a JSON-serialisable
    summary; one that raises is logged and the others still run.
    """

    def register(func: Callable[[], Any]) -> Callable[[], Any]:
        existing = _clock_steps.get(name)
        if existing is not None and existing.func is not func:
            raise ValueError(f"clock step {name!r} is already registered")
        _clock_steps[name] = ClockStep(name=name, func=func, every_seconds=every_seconds)
        return func

    return register


def clock_steps() -> list[ClockStep]:
    return [_clock_steps[name] for name in sorted(_clock_steps)]


def handler_unregister(name: str) -> None:
    """Remove a handler (plugins: one that was disabled or uninstalled). Its waiting jobs
    fail when they run here ("no handler ... is registered in this worker")."""
    _handlers.pop(name, None)


def job_prelude_register(name: str, func: Callable[[], Any]) -> None:
    """``func()`` runs in the worker before each job looks up its handler: plugins bring
    this process's handlers up to date with the database there. One that raises is logged
    and the job still runs."""
    _preludes[name] = func


def job_preludes() -> list[Callable[[], Any]]:
    return [_preludes[name] for name in sorted(_preludes)]


def handler_get(name: str) -> HandlerSpec | None:
    return _handlers.get(name)


def handler_names() -> list[str]:
    return sorted(_handlers)


def maintenance_steps() -> list[MaintenanceStep]:
    return sorted(_maintenance_steps.values(), key=lambda step: (step.order, step.name))
