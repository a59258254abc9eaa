"""Cross-cutting middleware: request ids, and the error envelope for everything under /api/."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponse
from whitenoise.middleware import WhiteNoiseMiddleware

from core.asyncdb import release_connections
from core.errors import error_response
from core.logs import request_id_var
from core.middleware import SyncAndAsyncMiddleware as _SyncAndAsync

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestIdMiddleware(_SyncAndAsync):
    """Takes a client's X-Request-ID when it is sane, else makes one; echoes it back."""

    def before(self, request: HttpRequest) -> Any:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        return request_id_var.set(request_id)

    def after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        response["X-Request-ID"] = request.request_id  # type: ignore[attr-defined]
        return response

    def finish(self, token: Any) -> None:
        request_id_var.reset(token)


def _is_envelope(response: HttpResponse) -> bool:
    if not response.get("Content-Type", "").startswith(
        ("application/json", "application/problem+json")
    ):
        return False
    if getattr(response, "streaming", False):
        return True
    try:
        body = json.loads(response.content)
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("error"), dict)


class ApiErrorEnvelopeMiddleware(_SyncAndAsync):
    """Errors that never reach DRF or Ninja (unknown paths, Django's 405s and 500s, CSRF
    failures) still answer API clients with the JSON envelope rather than an HTML page."""

    def after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if response.status_code < 400 or not request.path.startswith("/api/"):
            return response
        if _is_envelope(response):
            return response
        headers = {
            name: response[name]
            for name in ("Allow", "Retry-After", "WWW-Authenticate")
            if response.has_header(name)
        }
        return error_response(response.status_code, headers=headers)


class GateMiddleware(_SyncAndAsync):
    """Base for middleware that may answer in the view's stead after sync work (database,
    cache): ``check`` runs in a worker thread under ASGI, so it may use the ORM. Checks that
    touch no I/O set ``blocking = False`` and skip the thread hop."""

    blocking = True

    def check(self, request: HttpRequest) -> HttpResponse | None:
        return None

    def decorate(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        return response

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self._acall(request)
        refused = self.check(request)
        return refused or self.decorate(request, self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        refused = (
            await sync_to_async(self._check_released)(request)
            if self.blocking
            else self.check(request)
        )
        if refused is not None:
            return refused
        return self.decorate(request, await self.get_response(request))

    def _check_released(self, request: HttpRequest) -> HttpResponse | None:
        # The request's thread would otherwise keep the connection its check took until
        # the response ends: a stream's whole length, one pooled connection per open
        # stream, and requests beyond the pool's size waiting for one (then refused).
        try:
            return self.check(request)
        finally:
            release_connections()


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise (the static files: admin, API docs) in an async stack too. WhiteNoise is
    sync only, and one sync middleware makes Django run every request's chain through a
    thread and back (two hops a request, and the request's thread held while it runs)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        super().__init__(get_response)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self._acall(request)
        return super().__call__(request)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        if self.autorefresh:  # DEBUG: looks on disk, so in a thread
            static_file = await sync_to_async(self.find_file)(request.path_info)
        else:
            static_file = self.files.get(request.path_info)
        if static_file is not None:
            return await sync_to_async(self.serve)(static_file, request)
        return await self.get_response(request)
