"""Async turn code called from sync code: one loop per process when there is no server loop
(providers' cached async clients stay on the loop they were made on), the server's loop
under ASGI, and the work's database calls back in the calling thread."""

from __future__ import annotations

import asyncio
import threading

from asgiref.sync import sync_to_async

from conversations.services.from_sync import run_from_sync


async def _where(db) -> tuple[asyncio.AbstractEventLoop, int]:
    return asyncio.get_running_loop(), await db(threading.get_ident)


def test_sync_callers_share_one_loop_and_keep_their_database_thread():
    (first_loop, first_thread), (second_loop, second_thread) = (
        run_from_sync(_where),
        run_from_sync(_where),
    )

    assert first_loop is second_loop
    assert first_thread == second_thread == threading.get_ident()


def test_a_sync_view_under_a_server_loop_runs_the_work_on_that_loop():
    def sync_view() -> tuple[asyncio.AbstractEventLoop, int, int]:
        loop, db_thread = run_from_sync(_where)
        return loop, db_thread, threading.get_ident()

    async def server() -> tuple[asyncio.AbstractEventLoop, tuple]:
        return asyncio.get_running_loop(), await sync_to_async(sync_view)()

    server_loop, (work_loop, db_thread, view_thread) = asyncio.run(server())

    assert work_loop is server_loop
    assert db_thread == view_thread
