"""Running a turn: one async driver that yields the turn's domain events, consumed whole by
the JSON endpoint (message_send) and relayed as they come by the stream (message_stream)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async

from accounts.models import User
from conversations.models import Message
from conversations.services.from_sync import DatabaseCall, run_from_sync
from conversations.services.turns import (
    RunTracker,
    Turn,
    turn_abandon,
    turn_begin,
    turn_claim_renew,
    turn_complete,
    turn_fail,
)
from core.asyncdb import db_call, release_connections
from core.errors import ApplicationError

logger = logging.getLogger(__name__)


# --- the turn's events -----------------------------------------------------------------------
@dataclass(frozen=True)
class TurnStarted:
    user_message_id: str
    assistant_message_id: str


@dataclass(frozen=True)
class Token:
    """Reply text as the model produces it (streamed turns only)."""

    content: str


@dataclass(frozen=True)
class ToolCallStarted:
    """An agent's model asked for a tool (the call runs next, or waits for approval)."""

    id: str
    name: str
    args: dict[str, Any]


@dataclass(frozen=True)
class ToolCallFinished:
    """A tool call's result (an excerpt) or error, and how long it took."""

    id: str
    name: str
    result: str
    error: str
    latency_ms: int | None
    approval: str | None


@dataclass(frozen=True)
class ApprovalRequired:
    """The turn is paused until this tool call is approved or rejected."""

    approval_id: str
    tool_call_id: str
    name: str
    args: dict[str, Any]


@dataclass(frozen=True)
class TurnFinished:
    user_message: Message
    assistant_message: Message


@dataclass(frozen=True)
class TurnFailed:
    """The turn ended without a reply. `error` is what the client is told; `expected` is
    False for a bug (error is then a plain internal error and `cause` is the exception)."""

    error: ApplicationError
    cause: Exception
    expected: bool = True


TurnEvent = (
    TurnStarted
    | Token
    | ToolCallStarted
    | ToolCallFinished
    | ApprovalRequired
    | TurnFinished
    | TurnFailed
)


def _tool_events(messages: list[Any]) -> list[TurnEvent]:
    from agents.services import TOOL_RESULT_EXCERPT_CHARS

    events: list[TurnEvent] = []
    for message in messages:
        if message.type == "ai":
            for call in getattr(message, "tool_calls", None) or []:
                events.append(ToolCallStarted(str(call["id"]), call["name"], call["args"]))
        elif message.type == "tool":
            text = str(message.content)[:TOOL_RESULT_EXCERPT_CHARS]
            failed = getattr(message, "status", "success") == "error"
            metadata = message.response_metadata or {}
            events.append(
                ToolCallFinished(
                    str(message.tool_call_id),
                    str(message.name or ""),
                    "" if failed else text,
                    text if failed else "",
                    metadata.get("latency_ms"),
                    metadata.get("approval"),
                )
            )
    return events


# --- the driver ------------------------------------------------------------------------------
async def turn_run(turn: Turn, *, db: DatabaseCall, tokens: bool) -> AsyncIterator[TurnEvent]:
    """Run a begun turn's graph: TurnStarted, Token text (with `tokens`), then TurnFinished
    or TurnFailed. `db` runs the turn's database calls, its own and its graph nodes'.
    Cancelled before the reply is complete (a stream's reader left), it keeps the partial
    reply as incomplete."""
    from langchain_core.messages import AIMessageChunk

    from conversations.graph import (  # LangGraph loads with the first turn, not at django.setup()
        MODEL_NODE,
        get_graph,
    )

    yield TurnStarted(str(turn.user_message.pk), str(turn.assistant_message.pk))
    parts: list[str] = []
    tracker = RunTracker(turn)
    tracker.seed(turn.seeded)
    config = turn.config()
    config["configurable"]["db_call"] = db  # not a checkpoint's metadata: not a plain value
    # Without "messages" the model is not asked to stream: a JSON turn calls it once.
    modes = ["messages", *tracker.MODES] if tokens else tracker.MODES
    finishing: asyncio.Future[Any] | None = None
    keeper = asyncio.ensure_future(_claim_kept(turn, db))
    try:
        async for mode, payload in get_graph(turn.conversation.workflow).astream(
            turn.graph_input(), config, stream_mode=modes
        ):
            if mode != "messages":
                for event in _tool_events(tracker.see(mode, payload)):
                    yield event
                continue
            chunk, meta = payload
            if (
                meta.get("langgraph_node") == MODEL_NODE
                and isinstance(chunk, AIMessageChunk)
                and chunk.content
            ):
                parts.append(str(chunk.content))
                yield Token(parts[-1])
        if tracker.interrupts:  # paused on a tool call that needs approval
            from conversations.services.agent_turns import turn_pause

            pausing = asyncio.ensure_future(db(turn_pause, turn, tracker))
            finishing = pausing  # stored: the reader leaving now abandons nothing
            assistant, approval = await asyncio.shield(pausing)
            yield ApprovalRequired(
                str(approval.pk), approval.tool_call_id, approval.tool_name, approval.args
            )
            yield TurnFinished(turn.user_message, assistant)
            return
        # The reply is complete: store it even if the reader leaves now (not as abandoned).
        finishing = asyncio.ensure_future(db(turn_complete, turn, tracker))
        assistant = await asyncio.shield(finishing)
    except asyncio.CancelledError:
        if finishing is None:
            await asyncio.shield(
                db(turn_abandon, turn=turn, partial="".join(parts), tracker=tracker)
            )
        raise
    except Exception as exc:
        failure = await db(turn_fail, turn=turn, exc=exc)
        if failure is None:
            internal = ApplicationError("Internal server error.", code="internal_error", status=500)
            yield TurnFailed(internal, exc, expected=False)
        else:
            yield TurnFailed(failure, exc)
        return
    finally:
        keeper.cancel()
    yield TurnFinished(turn.user_message, assistant)


async def _claim_kept(turn: Turn, db: DatabaseCall) -> None:
    """Renew the turn's claim on its conversation every CHATTER_TURN_HEARTBEAT_SECONDS
    while it runs, so that only a claim whose process died goes stale (and is taken over
    within CHATTER_TURN_STALE_SECONDS, not after the longest turn anyone may run)."""
    from django.conf import settings

    while True:
        await asyncio.sleep(settings.CHATTER_TURN_HEARTBEAT_SECONDS)
        try:
            await db(turn_claim_renew, turn)
        except Exception:  # the next beat tries again: the turn itself is not failed for it
            logger.warning(
                "could not renew the turn's claim on conversation %s",
                turn.conversation.pk,
                exc_info=True,
            )


# --- JSON: the driver consumed whole ---------------------------------------------------------
async def _turn_result(turn: Turn, db: DatabaseCall) -> Message:
    async with contextlib.aclosing(turn_run(turn, db=db, tokens=False)) as events:
        async for event in events:
            if isinstance(event, TurnFinished):
                return event.assistant_message
            if isinstance(event, TurnFailed):
                if not event.expected:
                    raise event.cause  # a bug: the framework logs it and answers 500
                raise event.error from event.cause
    raise RuntimeError("the turn ended without an outcome")


def message_send(*, user: User, conversation_id: Any, content: str) -> tuple[Message, Message]:
    """One turn in a conversation the user may see, answered whole: the stored user message
    and the assistant's reply."""
    turn = turn_begin(user=user, conversation_id=conversation_id, content=content)
    return turn.user_message, run_from_sync(functools.partial(_turn_result, turn))


# --- streaming: the driver relayed as it goes ------------------------------------------------
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


async def _produce(turn: Turn, queue: asyncio.Queue[TurnEvent | None]) -> None:
    """Run the turn, putting its events on `queue` and None when it has ended."""
    try:
        async for event in turn_run(turn, db=_db_call, tokens=True):
            if isinstance(event, TurnFailed) and not event.expected:
                logger.error(
                    "stream failed in conversation %s",
                    turn.conversation.pk,
                    exc_info=event.cause,
                )
            queue.put_nowait(event)
    finally:
        queue.put_nowait(None)


def _start(turn: Turn) -> tuple[asyncio.Task[None], asyncio.Queue[TurnEvent | None]]:
    queue: asyncio.Queue[TurnEvent | None] = asyncio.Queue()
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
) -> AsyncIterator[TurnEvent]:
    """One streamed turn as events: TurnStarted, Token text, then TurnFinished or
    TurnFailed. The turn is claimed before the first event, so a 409 can still be a plain
    response. A reader that leaves mid-stream stops the turn, which keeps the partial
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

    async def events() -> AsyncIterator[TurnEvent]:
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            task.cancel()  # a no-op once the turn has ended

    return events()
