"""Streamed turns: each runs in a task of its own, its events read from a queue."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from langchain_core.messages import AIMessageChunk

from accounts.models import User
from chatter_project.asyncdb import db_call, release_connections
from chatter_project.errors import ApplicationError
from conversations.graph import MODEL_NODE, get_graph
from conversations.models import Message
from conversations.pricing import format_cost
from conversations.services.turns import (
    RunTracker,
    Turn,
    turn_abandon,
    turn_begin,
    turn_complete,
    turn_fail,
)

logger = logging.getLogger(__name__)


# --- streaming ---------------------------------------------------------------------------------
# Each streamed turn runs in a task of its own that feeds a queue the response reads, so the
# turn ends (finished, failed or abandoned) whatever happens to the request: a client that
# vanishes before the response starts would otherwise leave the turn claimed, its body
# never iterated, until the claim went stale. References keep running turns from being
# garbage collected (asyncio holds tasks weakly); the turn's state is in PostgreSQL.
_running_turns: set[asyncio.Task[None]] = set()


async def _db_call(func: Any, *args: Any, **kwargs: Any) -> Any:
    """db_call on any worker thread. The turn's task outlives the request whose sync thread
    db_call uses (under a sync middleware that thread's executor ends with the view); each
    call releases its connections, so it needs no particular thread."""

    def call() -> Any:
        try:
            return func(*args, **kwargs)
        finally:
            release_connections()

    return await sync_to_async(call, thread_sensitive=False)()


async def _produce(turn: Turn, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
    """Run the turn, putting its events on `queue` and None when it has ended. Cancelled
    (the reader left mid-stream), it keeps the partial reply as incomplete."""
    ids = {
        "user_message_id": str(turn.user_message.pk),
        "assistant_message_id": str(turn.assistant_message.pk),
    }
    queue.put_nowait({"event": "start", "data": ids})
    parts: list[str] = []
    tracker = RunTracker(turn)
    finishing: asyncio.Future[Message] | None = None
    try:
        async for mode, payload in get_graph(turn.conversation.workflow).astream(
            turn.graph_input(), turn.config(), stream_mode=["messages", *tracker.MODES]
        ):
            if mode != "messages":
                tracker.see(mode, payload)
                continue
            chunk, meta = payload
            if (
                meta.get("langgraph_node") == MODEL_NODE
                and isinstance(chunk, AIMessageChunk)
                and chunk.content
            ):
                parts.append(str(chunk.content))
                queue.put_nowait({"event": "delta", "data": {"content": parts[-1]}})
        # The reply is complete: store it even if the reader leaves now (not as abandoned).
        finishing = asyncio.ensure_future(_db_call(turn_complete, turn, tracker))
        assistant = await asyncio.shield(finishing)
        usage = {
            "tokens_in": assistant.tokens_in,
            "tokens_out": assistant.tokens_out,
            "cost": format_cost(assistant.cost),
        }
        done = {"status": assistant.status, "usage": usage, "latency_ms": assistant.latency_ms}
        queue.put_nowait({"event": "done", "data": {**ids, **done}})
    except asyncio.CancelledError:
        if finishing is None:
            await asyncio.shield(
                _db_call(turn_abandon, turn=turn, partial="".join(parts), tracker=tracker)
            )
        raise
    except Exception as exc:
        failure = await _db_call(turn_fail, turn=turn, exc=exc)
        if failure is None:
            logger.exception("stream failed in conversation %s", turn.conversation.pk)
            failure = ApplicationError("Internal server error.", code="internal_error", status=500)
        envelope = {"code": failure.code, "message": failure.message, "details": failure.details}
        queue.put_nowait({"event": "error", "data": {"error": envelope, "status": failure.status}})
    finally:
        queue.put_nowait(None)


def _start(turn: Turn) -> tuple[asyncio.Task[None], asyncio.Queue[dict[str, Any] | None]]:
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    task = asyncio.get_running_loop().create_task(_produce(turn, queue))
    _running_turns.add(task)
    task.add_done_callback(_running_turns.discard)
    return task, queue


def _start_unattended(begun: asyncio.Future[Turn]) -> None:
    # The client left while its turn was being claimed: the turn runs to its end anyway.
    if not begun.cancelled() and begun.exception() is None:
        _start(begun.result())


async def message_stream(
    *, user: User, conversation_id: Any, content: str
) -> AsyncIterator[dict[str, Any]]:
    """One streamed turn as events: `start`, `delta` token text, then `done` (ids and
    usage) or `error`. The turn is claimed before the first event, so a 409 can still be a
    plain response. A reader that leaves mid-stream stops the turn, which keeps the partial
    reply as incomplete; a turn whose client left before reading runs to its end."""
    begun = asyncio.ensure_future(
        db_call(turn_begin, user=user, conversation_id=conversation_id, content=content)
    )
    try:
        turn = await asyncio.shield(begun)
    except asyncio.CancelledError:
        begun.add_done_callback(_start_unattended)
        raise
    task, queue = _start(turn)

    async def events() -> AsyncIterator[dict[str, Any]]:
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            task.cancel()  # a no-op once the turn has ended

    return events()
