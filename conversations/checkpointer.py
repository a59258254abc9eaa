"""LangGraph's PostgresSaver on Chatter's database, shared by sync and async graph runs.

Why and how: docs/architecture.md, "conversations/checkpointer.py".
"""

from __future__ import annotations

import select
import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from django.conf import settings
from django.db import connection, connections
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from conversations.models import Conversation

if TYPE_CHECKING:  # LangGraph loads with the first checkpoint, not at django.setup() (issue 10)
    from langchain_core.runnables import RunnableConfig

    from conversations.pooled_saver import PooledPostgresSaver

_lock = threading.Lock()
_saver: PooledPostgresSaver | None = None


APPLICATION_NAME = "chatter-checkpoints"


def connection_check(conn: psycopg.Connection[Any]) -> None:
    """The pool's check of a connection it hands out, without a round trip when nothing
    happened: an idle connection has nothing to read unless PostgreSQL wrote to it, and
    what it writes to an idle session is its goodbye (the FATAL message of a termination,
    a restart or an idle timeout, then EOF). Then, or if the connection is already known
    broken, psycopg_pool's own check (an empty query) decides, and a dead connection is
    replaced instead of failing the turn that gets it. The empty query on every hand-out
    cost a turn eight round trips (one per checkpoint operation)."""
    if conn.broken or conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if readable:
        ConnectionPool.check_connection(conn)


def _conninfo(using: str = "default") -> str:
    params = connections[using].get_connection_params()
    keys = ("host", "port", "dbname", "user", "password")
    return " ".join(f"{k}={params[k]}" for k in keys if params.get(k) not in (None, ""))


def checkpointer_setup(*, using: str = "default") -> None:
    """Create (or bring up to date) LangGraph's checkpoint tables, at migrate time.

    Without this they appeared only on the first chat turn, and anything reading them
    before (the maintenance job's orphan pruning) failed on a fresh install. PostgresSaver's
    own migrations include CREATE INDEX CONCURRENTLY, so they run on an autocommit
    connection of their own, outside the migration's transaction."""
    with psycopg.connect(
        _conninfo(using),
        autocommit=True,
        row_factory=dict_row,
        prepare_threshold=0,
        application_name=APPLICATION_NAME,
    ) as conn:
        from langgraph.checkpoint.postgres import PostgresSaver

        PostgresSaver(conn).setup()


def get_checkpointer() -> PooledPostgresSaver:
    """The process's checkpointer. Its tables are made by the migrations
    (checkpointer_setup); setup() here is idempotent and only catches up a newer
    langgraph-checkpoint-postgres whose own migrations were not applied yet."""
    global _saver
    if _saver is None:
        from conversations.pooled_saver import PooledPostgresSaver

        with _lock:
            if _saver is None:
                pool = ConnectionPool(
                    _conninfo(),
                    min_size=1,
                    max_size=settings.CHATTER_CHECKPOINT_POOL_SIZE,
                    # A connection PostgreSQL ended (a restart, a failover, an idle
                    # timeout) is noticed and replaced when it is taken from the pool,
                    # instead of failing the turn that gets it.
                    check=connection_check,
                    kwargs={
                        "autocommit": True,
                        "application_name": APPLICATION_NAME,
                        "row_factory": dict_row,
                        "prepare_threshold": 0,
                        # See "Durability" in the module docstring.
                        "options": "-c synchronous_commit=off",
                    },
                    open=True,
                    name="langgraph-checkpoints",
                )
                saver = PooledPostgresSaver(pool)
                saver.setup()
                _saver = saver
    return _saver


def close_checkpointer() -> None:
    """Close the pool (tests, before dropping their database)."""
    global _saver
    with _lock:
        if _saver is not None:
            _saver.conn.close()  # type: ignore[union-attr]
            _saver = None


def checkpoints_prune_orphans(*, older_than: timedelta = timedelta(hours=1)) -> int:
    """Delete the LangGraph threads whose conversation is gone (deleted outside the
    service, or an interrupted delete). Threads touched recently are left alone: a branch
    seeds its thread before its conversation row commits."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.thread_id FROM checkpoints c GROUP BY c.thread_id "
            "HAVING max((c.checkpoint->>'ts')::timestamptz) < clock_timestamp() - %s "
            f"AND NOT EXISTS (SELECT 1 FROM {Conversation._meta.db_table} v "
            "WHERE v.id::text = c.thread_id)",
            [older_than],
        )
        orphans = [row[0] for row in cursor.fetchall()]
    saver = get_checkpointer()
    for thread_id in orphans:
        saver.delete_thread(thread_id)
    return len(orphans)


def thread_config(thread_id: str, checkpoint_id: str | None = None) -> RunnableConfig:
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


__all__ = [
    "checkpointer_setup",
    "checkpoints_prune_orphans",
    "close_checkpointer",
    "get_checkpointer",
    "thread_config",
]
