"""What the core hands a plugin's code: a context whose methods check the plugin's grants.

A plugin may use a capability only if its manifest asked for it **and** an operator granted
it; each method below checks both before it does anything. This is the boundary the
platform enforces through the objects it passes; it is not a sandbox (see the README:
a plugin is trusted code running inside the platform's processes).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection

from core.errors import ApplicationError

if TYPE_CHECKING:
    from accounts.models import User

# Never shown to a plugin's middleware or routes: they carry the caller's credentials.
HIDDEN_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "x-api-key"})


class PluginPermissionDenied(ApplicationError):
    status = 403
    code = "plugin_permission_denied"


class PluginFailed(ApplicationError):
    """A plugin's code raised or ran out of time; the failure is recorded and counted."""

    status = 502
    code = "plugin_failed"


class PluginTimeout(Exception):
    """A plugin's call outran its time budget."""


@dataclass(frozen=True)
class PluginRequest:
    """A request as a plugin's middleware or route sees it (no credentials)."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    user_id: int | None = None
    user_is_staff: bool = False
    body: Any = None  # routes: the parsed JSON body (None without one)
    subpath: str = ""  # routes: what follows /api/v1/plugins/<name>/


@dataclass(frozen=True)
class PluginResponse:
    """What a route may return instead of a plain JSON value: a status and a JSON body."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Refusal:
    """What a middleware's ``before`` hook returns to answer a request itself: a 4xx in
    the platform's error envelope."""

    status: int
    code: str
    message: str


class PluginContext:
    """Handed to every call of a plugin's code: its configuration, the user the call is
    for (if any) and the capabilities it was granted."""

    def __init__(
        self,
        *,
        plugin_id: str,
        name: str,
        config: dict[str, Any],
        requested: frozenset[str],
        granted: frozenset[str],
        user: User | None = None,
    ) -> None:
        self.plugin_id = plugin_id
        self.name = name
        self.config = config
        self.user = user
        self._requested = requested
        self._granted = granted
        self.log = logging.getLogger(f"chatter.plugins.{name}")

    # --- permissions ----------------------------------------------------------------------
    def has_permission(self, permission: str) -> bool:
        return permission in self._requested and permission in self._granted

    def require(self, permission: str) -> None:
        if permission not in self._requested:
            raise PluginPermissionDenied(
                f"The plugin {self.name} did not ask for {permission!r} in its manifest.",
                details={"permission": permission},
            )
        if permission not in self._granted:
            raise PluginPermissionDenied(
                f"The plugin {self.name} was not granted {permission!r} by an operator.",
                details={"permission": permission},
            )

    # --- network --------------------------------------------------------------------------
    def http_get(
        self, url: str, *, headers: dict[str, str] | None = None, max_bytes: int | None = None
    ) -> dict[str, Any]:
        """GET through the platform's outbound guard (public addresses only, unless
        CHATTER_OUTBOUND_ALLOWLIST opens one). Needs ``network``."""
        self.require("network")
        from core.netguard import fetch

        result = fetch(
            url,
            headers=headers,
            max_bytes=max_bytes or settings.CHATTER_HTTP_GET_MAX_BYTES,
            timeout=settings.CHATTER_HTTP_GET_TIMEOUT,
            allowlist=settings.CHATTER_OUTBOUND_ALLOWLIST,
        )
        return {
            "url": result.url,
            "status": result.status,
            "headers": result.headers,
            "text": result.text(),
            "truncated": result.truncated,
        }

    # --- the user's data --------------------------------------------------------------------
    def _user(self) -> User:
        if self.user is None:
            raise PluginPermissionDenied(
                "This call is made for no user: there are no documents or conversations to read."
            )
        return self.user

    def knowledge_search(self, query: str, *, k: int = 5) -> list[dict[str, Any]]:
        """The best passages of the call's user's own documents. Needs ``knowledge.read``."""
        self.require("knowledge.read")
        from knowledge.selectors import knowledge_search

        hits = knowledge_search(user=self._user(), query=query, k=k, own_only=True)
        return [
            {
                "document_id": str(hit.document_id),
                "document": hit.document_title,
                "chunk_id": hit.chunk_id,
                "content": hit.content,
                "score": hit.score,
            }
            for hit in hits
        ]

    def conversation_messages(self, conversation_id: str, *, limit: int = 50) -> list[dict]:
        """The last messages of one of the call's user's conversations (another's is not
        found). Needs ``conversations.read``."""
        self.require("conversations.read")
        from conversations.models import Conversation, Message

        user = self._user()
        if not Conversation.objects.filter(pk=conversation_id, owner=user).exists():
            raise ApplicationError("Conversation not found.", code="not_found", status=404)
        rows = Message.objects.filter(conversation_id=conversation_id).order_by("-position")
        return [
            {"role": m.role, "content": m.content, "created_at": m.created_at.isoformat()}
            for m in reversed(list(rows[: max(1, min(limit, 500))]))
        ]

    # --- the plugin's own store (always allowed: its rows are removed with it) ------------
    def data_get(self, key: str, default: Any = None) -> Any:
        from plugins.models import PluginData

        row = PluginData.objects.filter(plugin_id=self.plugin_id, key=key).first()
        return default if row is None else row.value

    def data_set(self, key: str, value: Any) -> None:
        from plugins.models import PluginData

        PluginData.objects.update_or_create(
            plugin_id=self.plugin_id, key=key[:200], defaults={"value": value}
        )

    def data_add(self, key: str, value: Any) -> bool:
        """Store ``value`` under ``key`` unless the key exists; whether it was stored (for
        idempotent subscribers: events are handed over at least once)."""
        from plugins.models import PluginData

        _, created = PluginData.objects.get_or_create(
            plugin_id=self.plugin_id, key=key[:200], defaults={"value": value}
        )
        return created

    def data_incr(self, key: str, by: int = 1) -> int:
        """Add ``by`` to the integer under ``key`` (0 when missing) in one statement."""
        from plugins.models import PluginData

        table = PluginData._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (plugin_id, key, value, updated_at) "
                "VALUES (%s, %s, to_jsonb(%s::bigint), now()) "
                "ON CONFLICT (plugin_id, key) DO UPDATE SET "
                f"value = to_jsonb(COALESCE(({table}.value #>> '{{}}')::bigint, 0) + %s), "
                "updated_at = now() RETURNING (value #>> '{}')::bigint",
                [self.plugin_id, key[:200], by, by],
            )
            return int(cursor.fetchone()[0])

    def data_items(self, prefix: str = "") -> dict[str, Any]:
        from plugins.models import PluginData

        rows = PluginData.objects.filter(plugin_id=self.plugin_id, key__startswith=prefix)
        return dict(rows.values_list("key", "value"))

    def data_delete(self, key: str) -> None:
        from plugins.models import PluginData

        PluginData.objects.filter(plugin_id=self.plugin_id, key=key).delete()
