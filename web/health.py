"""Liveness and readiness probes (Ninja, async, no authentication)."""

from __future__ import annotations

import time
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpRequest
from ninja import Router, Schema

from core.errors import error_response
from core.probes import probes, report
from web.http_policy import route_policy

router = Router(tags=["meta"])


class Health(Schema):
    status: str


class Check(Schema):
    ok: bool
    latency_ms: float
    error: str | None = None


class Embeddings(Schema):
    space: str
    loaded: bool
    state: str
    load_seconds: float | None = None
    error: str | None = None


class Ready(Schema):
    status: str
    checks: dict[str, Check]
    embeddings: Embeddings  # reported, not required: requests that need no search go on


@router.get("/health/", auth=None, response=Health, summary="Liveness: the process answers")
@route_policy(rate=None)  # probes are never rate limited
async def health(request: HttpRequest) -> dict[str, str]:
    return {"status": "ok"}


def _timed(probe: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        probe()
    except Exception as exc:  # any failure means "not ready"; the reason is reported
        return {"ok": False, "latency_ms": _ms(started), "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "latency_ms": _ms(started), "error": None}


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _database() -> None:
    # Its own short wait for a pooled connection (the pool's own is for requests), so a
    # probe answers promptly while PostgreSQL is down; a connection it gets is handed to
    # Django's for the probes below.
    pool = connection.pool
    if pool is None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return
    pool.open()
    raw = pool.getconn(timeout=settings.CHATTER_READY_DB_TIMEOUT)
    try:
        raw.execute("SELECT 1")
    finally:
        pool.putconn(raw)


def _not_run(reason: str) -> dict[str, Any]:
    return {"ok": False, "latency_ms": 0.0, "error": f"not run: {reason}"}


def _checks() -> dict[str, dict[str, Any]]:
    try:
        checks = {"database": _timed(_database)}
        database_up = checks["database"]["ok"]
        registered = probes()
        for probe in (p for p in registered if p.uses_database()):
            checks[probe.name] = (
                _timed(probe.check) if database_up else _not_run("the database is down")
            )
        for probe in (p for p in registered if not p.uses_database()):
            checks[probe.name] = _timed(probe.check)
        return checks
    finally:
        connection.close()  # hand the pooled connection back at once


@router.get(
    "/ready/",
    auth=None,
    response={200: Ready},
    summary="Readiness: the database and the job queue's broker are reachable",
    description="503 with the error envelope (the failed checks in `details.checks`) when not.",
)
@route_policy(rate=None)
async def ready(request: HttpRequest) -> Any:
    checks = await sync_to_async(_checks)()
    if all(check["ok"] for check in checks.values()):
        return {"status": "ok", "checks": checks, "embeddings": report("embeddings")}
    return error_response(503, "not_ready", "A dependency is unreachable.", {"checks": checks})
