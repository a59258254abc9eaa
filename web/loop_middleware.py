"""Django's own middleware, run on the event loop under ASGI when it does no I/O.

Django's ``MiddlewareMixin`` runs every ``process_request``, ``process_view`` and
``process_response`` of an async request in a worker thread and back (a "hop": a future,
a thread wake-up and a GIL hand-over, ~120-200 us of CPU each). Seven of Django's
middlewares made 13 of a streamed turn's 22 hops, although none of them touches the
database or a file on that path: they read headers and cookies and set response headers.

The subclasses here run those methods on the loop, and keep the hop for the cases that
do I/O: a session that was modified (its save), messages that were used or added (their
store may be the session), a CSRF check that parses a form body. In a sync stack (sync
views run through a sync chain, see chatter_project/asgi.py) they are Django's classes
unchanged.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.sessions import middleware as sessions
from django.http import HttpRequest, HttpResponseBase
from django.middleware import clickjacking, common, csrf, security


class _OnLoop:
    """``__acall__`` without hops: process_request and process_response on the loop,
    unless ``response_needs_thread`` says the response step does I/O this time."""

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        response = None
        if hasattr(self, "process_request"):
            response = self.process_request(request)
        response = response or await self.get_response(request)  # type: ignore[attr-defined]
        if hasattr(self, "process_response"):
            if self.response_needs_thread(request):
                return await sync_to_async(self.process_response)(request, response)
            response = self.process_response(request, response)
        return response

    def response_needs_thread(self, request: HttpRequest) -> bool:
        return False


class SecurityMiddleware(_OnLoop, security.SecurityMiddleware):
    pass


class CommonMiddleware(_OnLoop, common.CommonMiddleware):
    pass


class XFrameOptionsMiddleware(_OnLoop, clickjacking.XFrameOptionsMiddleware):
    pass


class AuthenticationMiddleware(_OnLoop, auth.AuthenticationMiddleware):
    """Sets the lazy ``request.user`` and ``request.auser``: nothing is read yet."""


class SessionMiddleware(_OnLoop, sessions.SessionMiddleware):
    """The store is created lazily (no query); only saving a modified session is I/O."""

    def response_needs_thread(self, request: HttpRequest) -> bool:
        session = getattr(request, "session", None)
        return session is not None and (session.modified or settings.SESSION_SAVE_EVERY_REQUEST)


class MessageMiddleware(_OnLoop, messages.MessageMiddleware):
    """Messages nobody read or added are stored nowhere; else the store (cookie, or the
    session: a query) runs in a thread."""

    def response_needs_thread(self, request: HttpRequest) -> bool:
        storage = getattr(request, "_messages", None)
        return storage is not None and (storage.used or storage.added_new)


class CsrfViewMiddleware(_OnLoop, csrf.CsrfViewMiddleware):
    """The secret comes from the cookie (or the lazily loaded session with
    CSRF_USE_SESSIONS, which then goes to a thread). The view check is on the loop for the
    views that skip it (exempt views, such as every Ninja operation; safe methods); a check
    that reads a form body runs in a thread."""

    def __init__(self, get_response: Any) -> None:
        super().__init__(get_response)
        if self.async_mode:
            sync_view_check = self.process_view

            async def process_view(
                request: HttpRequest, callback: Any, args: Any, kwargs: Any
            ) -> HttpResponseBase | None:
                if getattr(callback, "csrf_exempt", False) or request.method in (
                    "GET",
                    "HEAD",
                    "OPTIONS",
                    "TRACE",
                ):
                    return sync_view_check(request, callback, args, kwargs)
                return await sync_to_async(sync_view_check)(request, callback, args, kwargs)

            # An instance attribute: Django's handler sees a coroutine function and calls it
            # without a thread (it adapts sync process_view methods with one).
            self.process_view = process_view  # type: ignore[method-assign]

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        if settings.CSRF_USE_SESSIONS:  # the secret is read from the session: a query
            return await super(_OnLoop, self).__acall__(request)  # type: ignore[misc]
        return await super().__acall__(request)


__all__ = [
    "AuthenticationMiddleware",
    "CommonMiddleware",
    "CsrfViewMiddleware",
    "MessageMiddleware",
    "SecurityMiddleware",
    "SessionMiddleware",
    "XFrameOptionsMiddleware",
]
