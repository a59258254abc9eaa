"""What several benchmarks share: a database of their own, made fresh and dropped after, and
the percentile they report."""

from __future__ import annotations

from django.core.management import call_command
from django.db import connection


def recreate_database(name: str) -> None:
    """An empty, migrated database ``name`` (the settings already point at it)."""
    with connection._nodb_cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{name}"')
    call_command("migrate", verbosity=0)


def drop_database(name: str) -> None:
    connection.close()
    if hasattr(connection, "close_pool"):
        connection.close_pool()
    with connection._nodb_cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0..1) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
