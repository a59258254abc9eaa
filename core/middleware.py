"""The base of middleware that works the same in sync and async stacks (the kernel's, so
that any app's middleware can build on it: web's, plugins', openai_api's)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse


class SyncAndAsyncMiddleware:
    """Base for middleware that wraps the response the same way in sync and async stacks."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self._acall(request)
        token = self.before(request)
        try:
            return self.after(request, self.get_response(request))
        finally:
            self.finish(token)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        token = self.before(request)
        try:
            return self.after(request, await self.get_response(request))
        finally:
            self.finish(token)

    def before(self, request: HttpRequest) -> Any:
        return None

    def after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        return response

    def finish(self, token: Any) -> None:
        return None
