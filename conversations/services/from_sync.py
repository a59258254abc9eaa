"""Async turn code run from synchronous callers: the JSON endpoint, the summary job.

Why and how: docs/architecture.md, "conversations/services/from_sync.py".
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from asgiref.current_thread_executor import CurrentThreadExecutor
from asgiref.sync import SyncToAsync, async_to_sync, sync_to_async

T = TypeVar("T")
DatabaseCall = Callable[..., Awaitable[Any]]

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid = 0


def _server_loop() -> asyncio.AbstractEventLoop | None:
    """The ASGI server's loop when this thread runs sync code for it (asgiref records it
    in the threads sync_to_async runs code in), else None."""
    if getattr(SyncToAsync.threadlocal, "main_event_loop_pid", None) != os.getpid():
        return None
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    return loop if loop is not None and loop.is_running() else None


def _process_loop() -> asyncio.AbstractEventLoop:
    global _loop, _loop_pid
    with _lock:
        if _loop is None or _loop_pid != os.getpid():  # a forked worker starts its own
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="chatter-async", daemon=True).start()
            _loop_pid = os.getpid()
        return _loop


async def _in_request_thread(func: Any, *args: Any, **kwargs: Any) -> Any:
    return await sync_to_async(func, thread_sensitive=True)(*args, **kwargs)


def run_from_sync(work: Callable[[DatabaseCall], Awaitable[T]]) -> T:
    """`await work(db)` from sync code; `db(func, ...)` runs func in this thread."""
    if _server_loop() is not None:
        return async_to_sync(work)(_in_request_thread)
    executor = CurrentThreadExecutor(None)

    async def in_this_thread(func: Any, *args: Any, **kwargs: Any) -> Any:
        call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(executor, call)

    future = asyncio.run_coroutine_threadsafe(work(in_this_thread), _process_loop())
    executor.run_until_future(future)
    return future.result()
