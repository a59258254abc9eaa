"""The ASGI application: Django's handler, with sync views served by a sync middleware chain.

Why and how: docs/architecture.md, "chatter_project/asgi.py".
"""

from __future__ import annotations

import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from importlib import import_module
from typing import Any

from asgiref.sync import AsyncToSync, ThreadSensitiveContext, iscoroutinefunction, sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.http import HttpRequest, HttpResponseBase
from django.urls import ResolverMatch

from core.asyncdb import release_connections

# whitenoise serves static files through sync file iterators; under ASGI Django reads them
# into memory (they are small) and warns on every request. Streaming replies use async
# iterators and are not affected.
warnings.filterwarnings(
    "ignore",
    message="StreamingHttpResponse must consume synchronous iterators",
    module="django.core.handlers.asgi",
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatter_project.settings")


# Threads per web worker for requests' sync work (see RequestThreads). Each is one more
# database connection in use at a time; a sync call slower than the others (a large
# export's query) holds one, and the calls of other requests queue only when all are busy.
REQUEST_THREADS = int(os.environ.get("CHATTER_REQUEST_THREADS", "16"))


class _ResolvesOnce:
    """Django's handler resolving the request's path with the match already made for it
    (web.http_policy.request_match): once a request, not three times."""

    def resolve_request(self, request: HttpRequest) -> ResolverMatch:
        from web.http_policy import request_match  # the app registry is ready by now

        match = None if hasattr(request, "urlconf") else request_match(request)
        if match is None:  # Django's own resolve: its Resolver404 says what it tried
            return super().resolve_request(request)  # type: ignore[misc]
        request.resolver_match = match
        return match


class _SyncHandler(_ResolvesOnce, BaseHandler):
    pass


def _released(func: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return func(*args, **kwargs)
    finally:
        release_connections()


class RequestThreads(ThreadPoolExecutor):
    """The threads that run requests' thread-sensitive sync work (middleware checks, sync
    views, db_call), shared by all the requests a process serves.

    Django gives each request a thread of its own (asgiref's ThreadSensitiveContext, one new
    thread a request and one more to join it). Under hundreds of concurrent streams that is
    hundreds of threads runnable at once, taking the GIL from one another: the server's CPU
    per stream fell by about a fifth with a few shared threads (bench/RESULTS.md, session 9).
    A request still makes one sync call at a time (it awaits each before the next), as
    asgiref asks of a thread-sensitive executor, but its calls may run on different threads;
    so each call gives back the database connections it opened, and none is held by an idle
    thread. A call that holds a transaction open across calls would break here: none does
    (a transaction lives inside one call).
    """

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        return super().submit(_released, fn, *args, **kwargs)


class ChatterASGIHandler(_ResolvesOnce, ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        self.sync_handler = _SyncHandler()
        self.sync_handler.load_middleware(is_async=False)
        self.request_threads = RequestThreads(REQUEST_THREADS, thread_name_prefix="request")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await super().__call__(scope, receive, send)
        if getattr(AsyncToSync.executors, "current", None) is not None:
            # Called from sync code (async_to_sync: tests, management commands): Django's
            # way, the sync work runs on the caller's thread.
            return await super().__call__(scope, receive, send)
        async with ThreadSensitiveContext(executor=self.request_threads):
            await self.handle(scope, receive, send)

    @staticmethod
    def _view_is_async(request: HttpRequest) -> bool:
        from web.http_policy import request_match

        match = request_match(request)
        return match is not None and iscoroutinefunction(match.func)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        if self._view_is_async(request):
            return await super().get_response_async(request)
        return await sync_to_async(self.sync_handler.get_response, thread_sensitive=True)(request)


def get_application() -> ChatterASGIHandler:
    import django

    from core.embedded_db import embedded_database_ensure

    django.setup(set_prefix=False)
    embedded_database_ensure()
    handler = ChatterASGIHandler()
    from knowledge.embeddings import embeddings_warm

    embeddings_warm()  # in a background thread: requests are served meanwhile
    threading.Thread(target=_import_turn_path, name="turn-path-warm", daemon=True).start()
    return handler


def _import_turn_path() -> None:
    """LangGraph and LangChain load with a process's first turn, not with Django; importing
    them in the background as the worker starts spares that turn the wait."""
    for module in (
        "conversations.graph",
        "conversations.pooled_saver",
        "conversations.local_model",
    ):
        import_module(module)


application = get_application()
