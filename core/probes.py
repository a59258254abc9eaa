"""Readiness probes: each app registers what `ready/` must check, so the HTTP layer imports no app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Probe:
    name: str
    check: Callable[[], None]  # raises when not ready; the message is reported
    # Probes that query PostgreSQL are not run while it is unreachable (each would wait for
    # the pool's timeout in turn). May be a callable, read at each probe (settings can change).
    needs_database: bool | Callable[[], bool] = True

    def uses_database(self) -> bool:
        return self.needs_database() if callable(self.needs_database) else self.needs_database


_probes: dict[str, Probe] = {}
_reports: dict[str, Callable[[], dict[str, Any]]] = {}


def probe_register(
    name: str, check: Callable[[], None], *, needs_database: bool | Callable[[], bool] = True
) -> None:
    _probes[name] = Probe(name, check, needs_database)


def probes() -> list[Probe]:
    return list(_probes.values())


def report_register(name: str, report: Callable[[], dict[str, Any]]) -> None:
    """A status shown by `ready/` that does not decide readiness (e.g. the embedding model)."""
    _reports[name] = report


def report(name: str) -> dict[str, Any]:
    return _reports[name]()
