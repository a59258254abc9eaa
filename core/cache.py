"""A Django cache on PostgreSQL whose ``add`` and ``incr`` are atomic.

Why and how: docs/architecture.md, "core/cache.py".
"""

from __future__ import annotations

import pickle
import random
from collections.abc import Iterable
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.db import connections

_NOW = "extract(epoch from clock_timestamp())"
_LIVE = f"(expires IS NULL OR expires > {_NOW})"
# Roughly one write in this many also deletes expired rows, so the table stays small
# without a separate sweeper.
_CULL_ONE_IN = 100


class PostgresCache(BaseCache):
    def __init__(self, table: str, params: dict[str, Any]) -> None:
        super().__init__(params)
        self.table = connections["default"].ops.quote_name(table)
        self.alias = params.get("OPTIONS", {}).get("DATABASE", "default")

    # --- encoding -----------------------------------------------------------------------
    @staticmethod
    def _encode(value: Any) -> tuple[bytes | None, int | None]:
        if isinstance(value, int) and not isinstance(value, bool):
            return None, value
        return pickle.dumps(value, pickle.HIGHEST_PROTOCOL), None

    @staticmethod
    def _decode(blob: bytes | memoryview | None, counter: int | None) -> Any:
        if counter is not None:
            return counter
        assert blob is not None
        return pickle.loads(bytes(blob))

    def _ttl(self, timeout: float | object | None) -> float | None:
        """Seconds from now until expiry, None for never (the database's clock decides)."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return None
        return max(float(timeout), -1.0) if timeout != 0 else -1.0  # type: ignore[arg-type]

    def _execute(self, sql: str, params: Iterable[Any]) -> list[tuple[Any, ...]]:
        with connections[self.alias].cursor() as cursor:
            cursor.execute(sql, list(params))
            return cursor.fetchall() if cursor.description else []

    def _expires_sql(self, ttl: float | None) -> tuple[str, list[Any]]:
        if ttl is None:
            return "NULL", []
        return f"{_NOW} + %s", [ttl]

    def _maybe_cull(self) -> None:
        if random.randrange(_CULL_ONE_IN) == 0:
            self._execute(f"DELETE FROM {self.table} WHERE NOT {_LIVE}", [])

    # --- the cache API ------------------------------------------------------------------
    def add(
        self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        key = self.make_and_validate_key(key, version=version)
        blob, counter = self._encode(value)
        expires_sql, expires_params = self._expires_sql(self._ttl(timeout))
        rows = self._execute(
            f"INSERT INTO {self.table} AS c (cache_key, value, counter, expires) "
            f"VALUES (%s, %s, %s, {expires_sql}) "
            "ON CONFLICT (cache_key) DO UPDATE SET value = EXCLUDED.value, "
            "counter = EXCLUDED.counter, expires = EXCLUDED.expires "
            f"WHERE c.expires IS NOT NULL AND c.expires <= {_NOW} "
            "RETURNING 1",
            [key, blob, counter, *expires_params],
        )
        self._maybe_cull()
        return bool(rows)

    def set(
        self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        key = self.make_and_validate_key(key, version=version)
        self._set(key, value, timeout)
        self._maybe_cull()

    def _set(self, key: str, value: Any, timeout: Any) -> None:
        blob, counter = self._encode(value)
        expires_sql, expires_params = self._expires_sql(self._ttl(timeout))
        self._execute(
            f"INSERT INTO {self.table} (cache_key, value, counter, expires) "
            f"VALUES (%s, %s, %s, {expires_sql}) "
            "ON CONFLICT (cache_key) DO UPDATE SET value = EXCLUDED.value, "
            "counter = EXCLUDED.counter, expires = EXCLUDED.expires",
            [key, blob, counter, *expires_params],
        )

    def get(self, key: str, default: Any = None, version: int | None = None) -> Any:
        key = self.make_and_validate_key(key, version=version)
        rows = self._execute(
            f"SELECT value, counter FROM {self.table} WHERE cache_key = %s AND {_LIVE}", [key]
        )
        return self._decode(*rows[0]) if rows else default

    def get_many(self, keys: Iterable[str], version: int | None = None) -> dict[str, Any]:
        by_made_key = {self.make_and_validate_key(k, version=version): k for k in keys}
        if not by_made_key:
            return {}
        rows = self._execute(
            f"SELECT cache_key, value, counter FROM {self.table} "
            f"WHERE cache_key = ANY(%s) AND {_LIVE}",
            [list(by_made_key)],
        )
        return {by_made_key[k]: self._decode(blob, counter) for k, blob, counter in rows}

    def set_many(
        self, data: dict[str, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[str]:
        for key, value in data.items():
            self._set(self.make_and_validate_key(key, version=version), value, timeout)
        return []

    def touch(self, key: str, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        expires_sql, expires_params = self._expires_sql(self._ttl(timeout))
        rows = self._execute(
            f"UPDATE {self.table} SET expires = {expires_sql} "
            f"WHERE cache_key = %s AND {_LIVE} RETURNING 1",
            [*expires_params, key],
        )
        return bool(rows)

    def delete(self, key: str, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        rows = self._execute(
            f"DELETE FROM {self.table} WHERE cache_key = %s AND {_LIVE} RETURNING 1", [key]
        )
        return bool(rows)

    def delete_many(self, keys: Iterable[str], version: int | None = None) -> None:
        made = [self.make_and_validate_key(k, version=version) for k in keys]
        if made:
            self._execute(f"DELETE FROM {self.table} WHERE cache_key = ANY(%s)", [made])

    def has_key(self, key: str, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        return bool(
            self._execute(f"SELECT 1 FROM {self.table} WHERE cache_key = %s AND {_LIVE}", [key])
        )

    def incr(self, key: str, delta: int = 1, version: int | None = None) -> int:
        key = self.make_and_validate_key(key, version=version)
        # Not an upsert: Django's contract is that incr of a missing key raises ValueError.
        rows = self._execute(
            f"UPDATE {self.table} SET counter = counter + %s "
            f"WHERE cache_key = %s AND counter IS NOT NULL AND {_LIVE} RETURNING counter",
            [delta, key],
        )
        if not rows:
            raise ValueError(f"Key '{key}' not found or not an integer")
        return int(rows[0][0])

    def decr(self, key: str, delta: int = 1, version: int | None = None) -> int:
        return self.incr(key, -delta, version=version)

    def clear(self) -> None:
        self._execute(f"DELETE FROM {self.table}", [])

    # The base class's async incr is get-then-set; route every async call through the
    # atomic sync statements instead.
    async def aadd(self, *args: Any, **kwargs: Any) -> bool:
        return await sync_to_async(self.add)(*args, **kwargs)

    async def aincr(self, *args: Any, **kwargs: Any) -> int:
        return await sync_to_async(self.incr)(*args, **kwargs)

    async def adecr(self, *args: Any, **kwargs: Any) -> int:
        return await sync_to_async(self.decr)(*args, **kwargs)
