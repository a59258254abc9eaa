"""One Django middleware for every plugin: it brings this process's plugins in step with
the database (one read of the state generation per request) and runs the enabled
plugins' request hooks, each on the plugin thread pool within
CHATTER_PLUGIN_MIDDLEWARE_BUDGET. A hook that fails or runs out of time is counted and
skipped: the request goes on as if the plugin were not there.

``before(ctx, request)`` runs before the view (for API-key requests the user is not yet
known there: DRF authenticates in the view) and may answer the request with a
``Refusal`` (a 4xx in the error envelope). ``after(ctx, request, response)`` sees the
status and may return headers to add, ``X-`` names only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from core.errors import error_payload
from core.middleware import SyncAndAsyncMiddleware
from plugins.context import PluginFailed, Refusal
from plugins.extensions import request_view
from plugins.runtime import loaded_plugins, plugin_call, plugins_sync_quietly

logger = logging.getLogger("chatter.plugins")

# Probes answer without plugins (liveness needs no database); static files too.
SKIPPED = re.compile(r"^/(api/v\d+/(health|ready)/|static/)")
HEADER_NAME = re.compile(r"^X-[A-Za-z0-9-]{1,60}$")
HEADER_VALUE = re.compile(r"^[\x20-\x7e]{0,500}$")


def _after_hooked() -> list[Any]:
    return [p for p in loaded_plugins() if any(m.after for m in p.middleware)]


class PluginMiddleware(SyncAndAsyncMiddleware):
    """Its own __call__ and _acall (the hooks may refuse, and run on the plugin threads);
    the sync/async set-up is SyncAndAsyncMiddleware's."""

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self._acall(request)
        if SKIPPED.match(request.path):
            return self.get_response(request)
        refused = self.before(request)
        if refused is not None:
            return refused
        return self.after(request, self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        if SKIPPED.match(request.path):
            return await self.get_response(request)
        refused = await sync_to_async(self.before)(request)
        if refused is not None:
            return refused
        response = await self.get_response(request)
        if not _after_hooked():  # the loaded plugins are this process's memory: no I/O
            return response
        return await sync_to_async(self.after)(request, response)

    def before(self, request: HttpRequest) -> HttpResponse | None:
        plugins_sync_quietly()
        hooked = [p for p in loaded_plugins() if any(m.before for m in p.middleware)]
        if not hooked or not request.path.startswith("/api/"):
            return None
        view = request_view(request)
        for loaded in hooked:
            for hook in (m.before for m in loaded.middleware if m.before):
                try:
                    result = plugin_call(
                        loaded,
                        "middleware:before",
                        hook,
                        loaded.context(),
                        view,
                        threaded=True,
                        budget=settings.CHATTER_PLUGIN_MIDDLEWARE_BUDGET,
                    )
                except PluginFailed:
                    continue
                if isinstance(result, Refusal) and 400 <= result.status < 500:
                    details = {"plugin": loaded.name}
                    return JsonResponse(
                        error_payload(result.code, result.message, details),
                        status=result.status,
                    )
        return None

    def after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if not request.path.startswith("/api/"):
            return response
        hooked = _after_hooked()
        if not hooked:
            return response
        view = request_view(request)
        seen = {"status": response.status_code, "headers": dict(response.items())}
        for loaded in hooked:
            for hook in (m.after for m in loaded.middleware if m.after):
                try:
                    headers = plugin_call(
                        loaded,
                        "middleware:after",
                        hook,
                        loaded.context(),
                        view,
                        seen,
                        threaded=True,
                        budget=settings.CHATTER_PLUGIN_MIDDLEWARE_BUDGET,
                    )
                except PluginFailed:
                    continue
                for name, value in (headers or {}).items() if isinstance(headers, dict) else ():
                    if HEADER_NAME.match(str(name)) and HEADER_VALUE.match(str(value)):
                        response[name] = str(value)
                    else:
                        logger.warning("plugin %s: header %r refused", loaded.name, name)
        return response
