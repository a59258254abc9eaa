"""Database calls from async code (streams) that don't hold a pooled connection idle.

Why and how: docs/architecture.md, "core/asyncdb.py".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.db import connections

T = TypeVar("T")


def release_connections() -> None:
    """Return this thread's connections to the pool."""
    for connection in connections.all(initialized_only=True):
        connection.close()


async def db_call(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`await db_call(f, ...)`: run f in the request's sync thread, then release."""

    def call() -> T:
        try:
            return func(*args, **kwargs)
        finally:
            release_connections()

    return await sync_to_async(call)()
