"""The ASGI application itself (what uvicorn serves), not the test client's handler: sync
views run the sync middleware chain in one hop, async views the async chain."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from asgiref.sync import async_to_sync

from chatter_project.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


async def _send(*calls: tuple[str, str, dict]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        return [await c.request(method, url, **options) for method, url, options in calls]


def _requests(*calls: tuple[str, str, dict]) -> list[httpx.Response]:
    return async_to_sync(_send)(*calls)


def _served(*calls: tuple[str, str, dict]) -> list[httpx.Response]:
    """As uvicorn serves them: on a loop of its own, no sync caller's thread to run the
    requests' sync work (under async_to_sync it would all run on the caller's thread)."""
    return asyncio.run(_send(*calls))


def test_a_sync_view_gets_the_whole_middleware_chain(api_client):
    auth = {"headers": {"Authorization": f"Bearer {api_client.raw_key}"}}

    listed, missing, anonymous = _requests(
        ("GET", "/api/v1/conversations/", auth),
        ("GET", "/api/v1/no-such-thing/", auth),
        ("GET", "/api/v1/conversations/", {}),
    )

    assert listed.status_code == 200
    assert listed.json()["results"] == []
    for response in (listed, missing, anonymous):
        assert response.headers["X-Request-ID"]  # request id middleware
        assert response.headers["X-Content-Type-Options"] == "nosniff"  # security headers
    assert listed.headers["RateLimit-Limit"]  # rate limiter
    assert listed.headers["API-Version"]  # versioning
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"  # the envelope for Django's 404
    assert anonymous.status_code == 401


def test_a_sync_view_runs_in_the_sync_chain_in_one_thread(api_client, monkeypatch):
    """Django's plain ASGI handler would run this request's middleware hooks on the loop
    and hop to a thread for each sync one; here the whole sync chain runs in one thread."""
    threads: list[int] = []
    chain = application.sync_handler._middleware_chain

    def recording_chain(request):
        threads.append(threading.get_ident())
        return chain(request)

    monkeypatch.setattr(application.sync_handler, "_middleware_chain", recording_chain)
    auth = {"headers": {"Authorization": f"Bearer {api_client.raw_key}"}}

    (response,) = _requests(("GET", "/api/v1/conversations/", auth))

    assert response.status_code == 200
    assert len(threads) == 1  # the sync chain ran, once, for the whole request


def test_requests_reuse_kept_threads_and_hand_back_their_connections(api_client, monkeypatch):
    """asgiref would start two threads for each request (its executor, then a joiner);
    served as uvicorn serves them, requests' sync work runs on the process's shared request
    threads, and each call gives its database connection back to the pool."""
    from django.db import connections

    threads: list[int] = []
    chain = application.sync_handler._middleware_chain

    def recording_chain(request):
        threads.append(threading.get_ident())
        return chain(request)

    monkeypatch.setattr(application.sync_handler, "_middleware_chain", recording_chain)
    started: list[str] = []
    start = threading.Thread.start

    def recording_start(thread):
        started.append(thread.name)
        return start(thread)

    auth = {"headers": {"Authorization": f"Bearer {api_client.raw_key}"}}
    _served(("GET", "/api/v1/conversations/", auth))
    # The pool grows to its size as requests overlap (a thread it starts then is one of its
    # own, kept): fill it first, so that any thread started below is a request's own.
    shared = application.request_threads
    plain_submit = super(type(shared), shared).submit  # not the releasing one
    full = threading.Barrier(shared._max_workers, timeout=10)
    for future in [plain_submit(full.wait) for _ in range(shared._max_workers)]:
        future.result()
    monkeypatch.setattr(threading.Thread, "start", recording_start)

    responses = _served(*[("GET", "/api/v1/conversations/", auth)] * 5)

    assert [r.status_code for r in responses] == [200] * 5
    assert set(threads) <= {thread.ident for thread in shared._threads}  # its threads ran them
    assert started == []  # and no request started a thread
    # Every one of those threads ran key lookups, rate limits and views: none keeps a
    # connection open (one task per thread, held at a barrier until all have started).
    count = len(shared._threads)
    barrier = threading.Barrier(count, timeout=10)

    def connection_open() -> tuple[int, bool]:
        barrier.wait()
        return threading.get_ident(), connections["default"].connection is not None

    seen = dict(future.result() for future in [plain_submit(connection_open) for _ in range(count)])
    assert len(seen) == count
    assert not any(seen.values())


def test_an_async_view_keeps_the_async_chain(api_client, monkeypatch):
    auth = {"Authorization": f"Bearer {api_client.raw_key}"}
    conversation = api_client.post("/api/v1/conversations/", {"model": "local"}, format="json")
    calls: list[str] = []
    chain = application.sync_handler._middleware_chain
    monkeypatch.setattr(
        application.sync_handler,
        "_middleware_chain",
        lambda request: calls.append(request.path) or chain(request),
    )

    (response,) = _requests(
        (
            "POST",
            f"/api/v1/conversations/{conversation.json()['id']}/messages/stream/",
            {"headers": auth, "json": {"content": "Hello"}},
        )
    )

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "event: done" in response.text
    assert response.headers["X-Request-ID"]
    assert calls == []  # not the sync chain


def test_an_async_view_runs_django_s_middleware_on_the_loop(api_client, monkeypatch):
    """Django's MiddlewareMixin sends each process_request/process_response of an async
    request to a thread and back: 13 of a streamed turn's 22 thread hops. The ones in
    web.loop_middleware do no I/O on this path and stay on the loop."""
    from asgiref import sync

    hops: list[str] = []
    original = sync.SyncToAsync.__call__

    async def recording(self, *args, **kwargs):
        hops.append(getattr(self.func, "__qualname__", repr(self.func)))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(sync.SyncToAsync, "__call__", recording)
    conversation = api_client.post("/api/v1/conversations/", {"model": "local"}, format="json")
    url = f"/api/v1/conversations/{conversation.json()['id']}/messages/stream/"

    (response,) = _requests(
        (
            "POST",
            url,
            {
                "headers": {"Authorization": f"Bearer {api_client.raw_key}"},
                "json": {"content": "Hi"},
            },
        )
    )

    assert response.status_code == 200 and "event: done" in response.text
    middleware_hops = [h for h in hops if "process_" in h or "PluginMiddleware.after" in h]
    assert middleware_hops == []
    assert response.headers["X-Frame-Options"] == "DENY"  # the middlewares still ran
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_on_the_loop_a_modified_session_and_added_messages_are_still_stored(user):
    """The I/O cases keep their thread: a session the view modified is saved, and a message
    it added is stored (in the session or a cookie)."""
    from django.contrib import messages
    from django.contrib.messages.storage.cookie import CookieStorage
    from django.contrib.sessions.models import Session
    from django.http import HttpResponse
    from django.test import RequestFactory

    from web.loop_middleware import MessageMiddleware, SessionMiddleware

    async def view(request):
        request.session["seen"] = "yes"
        messages.info(request, "Saved.")
        return HttpResponse("ok")

    chain = SessionMiddleware(MessageMiddleware(view))
    request = RequestFactory().get("/admin/")

    response = async_to_sync(chain)(request)

    session_key = response.cookies["sessionid"].value
    stored = Session.objects.get(session_key=session_key).get_decoded()
    assert stored["seen"] == "yes"
    reader = RequestFactory().get("/admin/")
    reader.COOKIES["messages"] = response.cookies["messages"].value
    assert [str(m) for m in CookieStorage(reader)] == ["Saved."]


def test_a_request_thread_gives_back_the_connection_each_call_opened():
    """A request's calls may run on different shared threads: a connection left open by
    one call would stay out of the pool while its thread waits for other requests' work."""
    from django.db import connections

    from chatter_project.asgi import RequestThreads

    threads = RequestThreads(1)
    try:
        opened = threads.submit(lambda: connections["default"].ensure_connection() or True)
        assert opened.result()
        plain_submit = super(RequestThreads, threads).submit
        left_open = plain_submit(lambda: connections["default"].connection is not None)
        assert left_open.result() is False
    finally:
        threads.shutdown()
