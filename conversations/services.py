"""Writes for conversations: create, send (JSON and streamed), branch, fork, delete, feedback."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from psycopg.types.json import Jsonb

from accounts.models import User
from chatter_project.asyncdb import db_call, release_connections
from chatter_project.errors import ApplicationError, Conflict, NotFound
from conversations.checkpointer import get_checkpointer, thread_config
from conversations.graph import MODEL_NODE, TurnSettings, get_graph, remember
from conversations.models import Conversation, Message, ModelPrice
from conversations.pricing import catalog_cost, format_cost
from conversations.providers import (
    LOCAL_MODEL_NAME,
    chat_model,
    default_model_spec,
    provider_failure,
    split_spec,
    validate_spec,
)
from conversations.selectors import conversation_get
from jobs.models import Job, JobPriority
from jobs.services import enqueue

logger = logging.getLogger(__name__)

EDITABLE_FIELDS = (
    "workflow",
    "title",
    "model",
    "temperature",
    "max_tokens",
    "system_prompt",
    "memory_window",
    "relevance_floor",
    "metadata",
)


class ConversationDeleted(NotFound):
    """The conversation was deleted while one of its turns ran."""

    code = "conversation_deleted"


def _conversation_gone(turn: Turn) -> ConversationDeleted:
    # The graph may have written checkpoints after the delete removed the thread's: remove
    # them again now that the turn has stopped writing.
    get_checkpointer().delete_thread(str(turn.conversation.pk))
    return ConversationDeleted(
        "The conversation was deleted while its reply was being produced.",
        details={"conversation_id": str(turn.conversation.pk)},
    )


# --- create, update, delete -----------------------------------------------------------------
def _validate_settings(fields: dict[str, Any]) -> dict[str, Any]:
    if fields.get("model"):
        validate_spec(fields["model"])
    return fields


def conversation_create(*, owner: User, **fields: Any) -> Conversation:
    """A new, empty conversation with optional per-conversation model settings."""
    unknown = set(fields) - set(EDITABLE_FIELDS)
    if unknown:
        raise ApplicationError(f"Unknown fields: {', '.join(sorted(unknown))}.")
    fields.setdefault("workflow", settings.CHATTER_DEFAULT_WORKFLOW)
    return Conversation.objects.create(owner=owner, **_validate_settings(fields))


def conversation_update(*, conversation: Conversation, **fields: Any) -> Conversation:
    for name, value in _validate_settings(fields).items():
        if name not in EDITABLE_FIELDS:
            raise ApplicationError(f"Field {name!r} cannot be changed.")
        setattr(conversation, name, value)
    conversation.save(update_fields=[*fields, "updated_at"])
    return conversation


def conversation_delete(*, conversation: Conversation) -> None:
    """Delete the conversation, its messages and its LangGraph checkpoints."""
    thread_id = str(conversation.pk)
    conversation.delete()
    get_checkpointer().delete_thread(thread_id)


# --- a turn ------------------------------------------------------------------------------------
def run_config(conversation: Conversation, model: str, *, reply_id: str = "") -> dict[str, Any]:
    """The graph config for this conversation: its thread and its model settings."""
    configurable = thread_config(str(conversation.pk))["configurable"]
    return {
        "configurable": {
            **configurable,
            "model": model,
            "temperature": conversation.temperature,
            "max_tokens": conversation.max_tokens,
            "system_prompt": conversation.system_prompt,
            "memory_window": memory_window(conversation),
            "reply_id": reply_id,
            "user_id": conversation.owner_id,
            "relevance_floor": relevance_floor(conversation),
        }
    }


def memory_window(conversation: Conversation) -> int:
    return conversation.memory_window or settings.CHATTER_MEMORY_WINDOW


def relevance_floor(conversation: Conversation) -> float:
    floor = conversation.relevance_floor
    return settings.CHATTER_RAG_RELEVANCE_FLOOR if floor is None else floor


@dataclass
class Turn:
    conversation: Conversation
    user_message: Message
    assistant_message: Message
    model: str
    started: float

    def config(self) -> dict[str, Any]:
        return run_config(self.conversation, self.model, reply_id=str(self.assistant_message.pk))

    def graph_input(self) -> dict[str, Any]:
        return {"messages": [HumanMessage(self.user_message.content, id=str(self.user_message.pk))]}


def _validate_content(content: str) -> str:
    if not isinstance(content, str) or not content.strip():
        raise ApplicationError(
            "A message needs content.",
            code="validation_error",
            details={"content": ["This field may not be blank."]},
        )
    if len(content) > settings.CHATTER_MAX_MESSAGE_CHARS:
        raise ApplicationError(
            "The message is too long.",
            code="validation_error",
            details={"content": [f"At most {settings.CHATTER_MAX_MESSAGE_CHARS} characters."]},
        )
    return content


def _claim(conversation: Conversation) -> None:
    """Take the conversation's turn for work other than a reply (a summary): one statement
    only one caller can win; 409 when a reply or a summary is running."""
    claimed = Conversation.objects.filter(
        Q(turn_started_at__isnull=True)
        | Q(turn_started_at__lt=Now() - timedelta(seconds=settings.CHATTER_TURN_STALE_SECONDS)),
        pk=conversation.pk,
    ).update(turn_started_at=Now())
    if not claimed:
        raise Conflict(
            "A reply is still being produced in this conversation; send again when it ends.",
            code="turn_in_progress",
        )


def _release(conversation: Conversation) -> None:
    Conversation.objects.filter(pk=conversation.pk).update(turn_started_at=None)


# The start of every turn in one statement: claim the conversation (visible to the user,
# no reply running), reserve two message positions, and insert the user's message and the
# reply's placeholder at them. Its commit does not wait for the WAL flush: the turn's last
# statement (turn_finish / turn_fail) is a synchronous commit, which flushes the WAL up to
# it, this commit included. A turn answered is durable; one cut short by a database crash
# was never answered.
_BEGIN_SQL = """
WITH async_commit AS MATERIALIZED (
    SELECT set_config('synchronous_commit', 'off', true)
), claimed AS (
    UPDATE {conversation} SET
        turn_started_at = now(), message_count = message_count + 2, updated_at = now(),
        title = CASE WHEN title = '' THEN %(title)s ELSE title END
    WHERE id = %(conversation_id)s AND (%(viewer_is_staff)s OR owner_id = %(viewer_id)s)
      AND (turn_started_at IS NULL
           OR turn_started_at < now() - make_interval(secs => %(stale_seconds)s))
    RETURNING *
), stored AS (
    INSERT INTO {message} ({columns})
    SELECT {user_values} FROM claimed UNION ALL SELECT {reply_values} FROM claimed
    RETURNING position
)
SELECT claimed.*, (SELECT min(position) FROM stored) AS first_position
FROM claimed, async_commit
"""


@functools.cache
def _begin_sql() -> tuple[str, tuple[Any, ...]]:
    """_BEGIN_SQL for Message's current fields: each value a typed parameter, except the
    positions, which come from the claimed row's message count, and the reply's model, the
    conversation's (else the default)."""
    fields = tuple(Message._meta.concrete_fields)

    def values(prefix: str, offset: int) -> str:
        computed = {"position": f"claimed.message_count - {offset}"}
        if prefix == "reply":
            computed["model"] = "COALESCE(NULLIF(claimed.model, ''), %(default_model)s)"
        return ", ".join(
            computed.get(field.attname)
            or f"%({prefix}_{field.attname})s::{field.db_type(connection)}"
            for field in fields
        )

    sql = _BEGIN_SQL.format(
        conversation=Conversation._meta.db_table,
        message=Message._meta.db_table,
        columns=", ".join(connection.ops.quote_name(field.column) for field in fields),
        user_values=values("user", 2),
        reply_values=values("reply", 1),
    )
    return sql, fields


def turn_begin(*, user: User, conversation_id: Any, content: str) -> Turn:
    """Claim the conversation for one turn and store the user's message at once.

    The claim is a conditional UPDATE that exactly one request can win; a second message
    while a reply is running gets 409 instead of interleaving the history. The same
    statement checks the user may see the conversation, reserves the two message positions
    and inserts both messages (see _BEGIN_SQL); 404 for a conversation the user cannot see.
    """
    content = _validate_content(content)
    sql, fields = _begin_sql()
    user_message = Message(
        conversation_id=conversation_id, position=0, role=Message.Role.USER, content=content
    )
    reply = Message(
        conversation_id=conversation_id,
        position=0,
        role=Message.Role.ASSISTANT,
        status=Message.Status.INCOMPLETE,
    )
    params: dict[str, Any] = {
        "default_model": default_model_spec(),
        "conversation_id": conversation_id,
        "viewer_is_staff": user.is_staff,
        "viewer_id": user.pk,
        "title": content.strip().splitlines()[0][:80],
        "stale_seconds": settings.CHATTER_TURN_STALE_SECONDS,
    }
    for prefix, message in (("user", user_message), ("reply", reply)):
        for field in fields:
            value = field.pre_save(message, add=True)
            params[f"{prefix}_{field.attname}"] = field.get_db_prep_save(value, connection)
    # raw() maps the returned columns onto a Conversation by name, with Django's converters.
    claimed = list(Conversation.objects.raw(sql, params))
    if not claimed:
        if conversation_get(user=user, conversation_id=conversation_id) is None:
            raise NotFound("Not found.")
        raise Conflict(
            "A reply is still being produced in this conversation; send again when it ends.",
            code="turn_in_progress",
        )
    conversation = claimed[0]
    user_message.position = conversation.first_position
    reply.position = conversation.first_position + 1
    user_message.conversation = reply.conversation = conversation
    reply.model = conversation.model or params["default_model"]
    return Turn(conversation, user_message, reply, reply.model, time.monotonic())


# One statement for the end of every turn (the hot path): the reply's content, usage and
# cost (priced in SQL from the admin's price table, the exact spec first, then the bare
# model name; else the price database's cost, NULL when unknown, which makes the
# conversation's total unknown too), the user message's checkpoint, and the conversation's
# totals and release.
_FINISH_SQL = """
WITH price AS (
    SELECT input_per_million, output_per_million FROM {price}
    WHERE model = %(spec)s OR model = %(name)s
    ORDER BY (model = %(spec)s) DESC LIMIT 1
), asked AS (
    UPDATE {message} SET checkpoint_id = %(user_checkpoint)s WHERE id = %(user_id)s
), replied AS (
    UPDATE {message} SET
        content = %(content)s, status = %(status)s, tokens_in = %(tokens_in)s,
        tokens_out = %(tokens_out)s, latency_ms = %(latency_ms)s, tool_calls = %(tool_calls)s,
        checkpoint_id = %(reply_checkpoint)s, metadata = metadata || %(metadata)s,
        cost = COALESCE((SELECT round((%(tokens_in)s * input_per_million
                                       + %(tokens_out)s * output_per_million) / 1000000, 6)
                         FROM price), %(catalog_cost)s)
    WHERE id = %(reply_id)s
    RETURNING cost
)
UPDATE {conversation} SET
    tokens_in = tokens_in + %(tokens_in)s, tokens_out = tokens_out + %(tokens_out)s,
    cost = cost + (SELECT cost FROM replied), summary = %(summary)s,
    summarized_messages = %(summarized)s, turn_started_at = NULL, updated_at = now()
WHERE id = %(conversation_id)s
RETURNING (SELECT cost FROM replied)
"""


class RunTracker:
    """Follows a graph run's `values` and `checkpoints` events: the final state, and the
    checkpoints whose state ends with the user's message and with the reply (where a
    branch from either message starts) without reading checkpoint history back."""

    MODES = ["values", "checkpoints"]

    def __init__(self, turn: Turn) -> None:
        self.user_id, self.reply_id = str(turn.user_message.pk), str(turn.assistant_message.pk)
        self.state: dict[str, Any] = {}
        self.user_checkpoint = ""
        self.reply_checkpoint = ""

    def see(self, mode: str, payload: Any) -> None:
        if mode == "values":
            self.state = payload
        elif mode == "checkpoints":
            messages = payload["values"].get("messages") or []
            last = messages[-1].id if messages else None
            checkpoint_id = payload["config"]["configurable"]["checkpoint_id"]
            if last == self.user_id:
                self.user_checkpoint = checkpoint_id
            elif last == self.reply_id:
                self.reply_checkpoint = checkpoint_id

    @property
    def reply(self) -> BaseMessage:
        return self.state["messages"][-1]


def turn_finish(
    *,
    turn: Turn,
    reply: BaseMessage,
    state: dict[str, Any],
    checkpoints: tuple[str, str],
    status: str = Message.Status.COMPLETE,
) -> Message:
    """Store the reply with its usage and cost, roll totals up, release the conversation."""
    usage = getattr(reply, "usage_metadata", None) or {}
    assistant = turn.assistant_message
    assistant.content = str(reply.content)
    assistant.status = status
    assistant.tokens_in = int(usage.get("input_tokens", 0))
    assistant.tokens_out = int(usage.get("output_tokens", 0))
    assistant.latency_ms = int((time.monotonic() - turn.started) * 1000)
    assistant.tool_calls = list(getattr(reply, "tool_calls", None) or [])
    assistant.checkpoint_id = checkpoints[1]
    extra: dict[str, Any] = {"usage_source": "local" if turn.model == "local" else "provider"}
    if "sources" in state:
        # The citation map: [n] in the reply -> the document and chunk it came from.
        extra["sources"] = [
            {
                key: source.get(key)
                for key in ("n", "document_id", "title", "chunk_id", "page", "score", "similarity")
            }
            for source in state.get("sources") or []
        ]
    if state.get("retrieval_error"):
        extra["retrieval_error"] = state["retrieval_error"]
    assistant.metadata = {**assistant.metadata, **extra}
    turn.user_message.checkpoint_id = checkpoints[0]
    sql = _FINISH_SQL.format(
        price=ModelPrice._meta.db_table,
        message=Message._meta.db_table,
        conversation=Conversation._meta.db_table,
    )
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            {
                "spec": turn.model,
                "name": split_spec(turn.model)[1],
                "user_id": turn.user_message.pk,
                "user_checkpoint": checkpoints[0],
                "reply_id": assistant.pk,
                "reply_checkpoint": checkpoints[1],
                "content": assistant.content,
                "status": status,
                "tokens_in": assistant.tokens_in,
                "tokens_out": assistant.tokens_out,
                "latency_ms": assistant.latency_ms,
                "tool_calls": Jsonb(assistant.tool_calls),
                "catalog_cost": catalog_cost(
                    spec=turn.model, tokens_in=assistant.tokens_in, tokens_out=assistant.tokens_out
                ),
                "metadata": Jsonb(extra),
                "summary": state.get("summary", ""),
                "summarized": state.get("summarized", 0),
                "conversation_id": turn.conversation.pk,
            },
        )
        row = cursor.fetchone()
    if row is None:  # deleted meanwhile: its rows are gone, nothing was updated
        raise _conversation_gone(turn)
    (assistant.cost,) = row
    return assistant


def turn_fail(*, turn: Turn, exc: Exception) -> ApplicationError | None:
    """Keep the user's message, mark the reply as an error, release the conversation.
    A conversation deleted meanwhile answers ConversationDeleted (404)."""
    failure = provider_failure(exc)
    text = failure.message if failure else f"Internal error: {type(exc).__name__}"
    with transaction.atomic():
        Message.objects.filter(pk=turn.assistant_message.pk).update(
            status=Message.Status.ERROR,
            error=text,
            latency_ms=int((time.monotonic() - turn.started) * 1000),
        )
        released = Conversation.objects.filter(pk=turn.conversation.pk).update(turn_started_at=None)
    if not released:
        return _conversation_gone(turn)
    if isinstance(exc, ConversationDeleted):
        return exc
    turn.assistant_message.refresh_from_db()
    return failure


def _partial_reply(turn: Turn, partial: str) -> AIMessage:
    # A `local` reply cut short is still not a model's words (see written_without_model).
    local = split_spec(turn.model)[0] == LOCAL_MODEL_NAME
    return AIMessage(
        partial,
        id=str(turn.assistant_message.pk),
        response_metadata={"model_name": LOCAL_MODEL_NAME} if local else {},
    )


def turn_abandon(*, turn: Turn, partial: str, tracker: RunTracker) -> None:
    """A client left mid-stream: keep what was produced, marked incomplete, in the rows and
    in the checkpointed state (so the next turn's context matches the record)."""
    graph = get_graph(turn.conversation.workflow)
    reply_checkpoint = ""
    if partial:
        seeded = graph.update_state(
            turn.config(),
            {"messages": [_partial_reply(turn, partial)]},
            as_node=MODEL_NODE,
        )
        reply_checkpoint = seeded["configurable"]["checkpoint_id"]
    with contextlib.suppress(ConversationDeleted):  # nobody is left to tell
        turn_finish(
            turn=turn,
            reply=AIMessage(partial),
            state=graph.get_state(turn.config()).values,
            checkpoints=(tracker.user_checkpoint, reply_checkpoint),
            status=Message.Status.INCOMPLETE,
        )


SUMMARIZATION_HANDLER = "conversation_summarization"


def summary_schedule_if_due(*, conversation: Conversation, state: dict[str, Any]) -> Job | None:
    """After a turn: past the memory window, summarize in the background (low priority,
    one pending job per conversation), so no reply waits for a summary."""
    if len(state.get("messages") or []) <= memory_window(conversation):
        return None
    return enqueue(
        SUMMARIZATION_HANDLER,
        args={"conversation_id": str(conversation.pk)},
        priority=JobPriority.LOW,
        dedupe_key=f"summarize:{conversation.pk}",
        owner=conversation.owner,
    )


def conversation_summarize(*, conversation_id: str) -> dict[str, Any]:
    """Fold the oldest messages of the model's context into the summary, now.

    Holds the conversation's turn while it works (a message sent meanwhile gets 409, and a
    summary never runs during a reply: Conflict here makes the job retry later)."""
    conversation = Conversation.objects.filter(pk=conversation_id).first()
    if conversation is None:
        return {"summarized": 0, "reason": "the conversation no longer exists"}
    _claim(conversation)
    try:
        model = conversation.model or default_model_spec()
        graph = get_graph(conversation.workflow)
        config = run_config(conversation, model)
        state = graph.get_state(config).values
        if not state.get("messages"):
            return {"summarized": 0}
        update = remember(
            state, TurnSettings.of(config), chat_model(model), trigger=memory_window(conversation)
        )
        if not update:
            return {"summarized": 0}
        graph.update_state(config, update, as_node=MODEL_NODE)
        Conversation.objects.filter(pk=conversation.pk).update(
            summary=update["summary"], summarized_messages=update["summarized"]
        )
        return {"summarized": len(update["messages"]), "total_summarized": update["summarized"]}
    finally:
        _release(conversation)


def message_send(*, user: User, conversation_id: Any, content: str) -> tuple[Message, Message]:
    """One synchronous turn in a conversation the user may see: the stored user message and
    the assistant's reply."""
    turn = turn_begin(user=user, conversation_id=conversation_id, content=content)
    tracker = RunTracker(turn)
    try:
        for mode, payload in get_graph(turn.conversation.workflow).stream(
            turn.graph_input(), turn.config(), stream_mode=tracker.MODES
        ):
            tracker.see(mode, payload)
    except Exception as exc:
        failure = turn_fail(turn=turn, exc=exc)
        if failure is None:
            raise
        raise failure from exc
    return turn.user_message, _finish_turn(turn, tracker)


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
        finishing = asyncio.ensure_future(_db_call(_finish_turn, turn, tracker))
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


def _finish_turn(turn: Turn, tracker: RunTracker) -> Message:
    assistant = turn_finish(
        turn=turn,
        reply=tracker.reply,
        state=tracker.state,
        checkpoints=(tracker.user_checkpoint, tracker.reply_checkpoint),
    )
    summary_schedule_if_due(conversation=turn.conversation, state=tracker.state)
    return assistant


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


# --- branch and fork ---------------------------------------------------------------------------
def _checkpoint_source(message: Message) -> Message:
    """The message whose own thread holds a checkpoint for it (copies point at originals)."""
    seen = 0
    while not message.checkpoint_id and message.metadata.get("copied_from") and seen < 100:
        original = Message.objects.filter(pk=message.metadata["copied_from"]).first()
        if original is None:
            break
        message, seen = original, seen + 1
    if not message.checkpoint_id:
        raise ApplicationError(
            "This message has no checkpoint to branch from (its turn did not complete).",
            code="not_branchable",
            details={"message_id": ["Choose a message from a completed turn."]},
            status=409,  # the message exists; its turn's state is what refuses
        )
    return message


_COPIED_MESSAGE_FIELDS = (
    "position",
    "role",
    "content",
    "tool_calls",
    "status",
    "error",
    "model",
    "tokens_in",
    "tokens_out",
    "cost",
    "latency_ms",
)


def _total_cost(rows: list[Message]) -> Decimal | None:
    costs = [m.cost for m in rows]
    return None if None in costs else sum(costs, Decimal(0))  # type: ignore[arg-type]


def _copy_into(
    *,
    source: Conversation,
    owner: User,
    rows: list[Message],
    values: dict[str, Any],
    lineage: dict[str, Any],
) -> Conversation:
    """A new conversation with `source`'s settings, copies of `rows` as new rows, and a
    LangGraph thread seeded with the checkpointed `values`, without calling the model."""
    graph = get_graph(source.workflow)
    with transaction.atomic():
        copy = Conversation.objects.create(
            owner=owner,
            # The source's settings, with a title of its own and a copy of the metadata.
            **{
                **{name: getattr(source, name) for name in EDITABLE_FIELDS},
                "title": lineage.pop("title"),
                "metadata": dict(source.metadata),
            },
            summary=values.get("summary", ""),
            summarized_messages=values.get("summarized", 0),
            message_count=len(rows),
            tokens_in=sum(m.tokens_in for m in rows),
            tokens_out=sum(m.tokens_out for m in rows),
            cost=_total_cost(rows),
            **lineage,
        )
        new_ids: dict[str, str] = {}
        copies = []
        for row in rows:
            clone = Message(
                conversation=copy,
                **{name: getattr(row, name) for name in _COPIED_MESSAGE_FIELDS},
                metadata={
                    **row.metadata,
                    "copied_from": str(row.pk),
                    # Every id this message has had: checkpoints of any ancestor thread
                    # carry one of them, and seeding maps them all to the new row.
                    "origin_ids": [*row.metadata.get("origin_ids", []), str(row.pk)],
                },
            )
            for origin in clone.metadata["origin_ids"]:
                new_ids[origin] = str(clone.pk)
            copies.append(clone)
        Message.objects.bulk_create(copies)
        values = dict(values)
        values["messages"] = [
            m.model_copy(update={"id": new_ids.get(str(m.id), m.id)})
            for m in values.get("messages", [])
        ]
        if values["messages"] or values.get("summary"):
            seeded = graph.update_state(thread_config(str(copy.pk)), values, as_node=MODEL_NODE)
            # The seeded state ends with this message: a branch from it starts there. (Not
            # always the last row: a failed reply is in the record but not in the state.)
            last = values["messages"][-1].id if values["messages"] else None
            Message.objects.filter(conversation=copy, pk=last).update(
                checkpoint_id=seeded["configurable"]["checkpoint_id"]
            )
    return copy


def _history_through(message: Message) -> tuple[list[Message], dict[str, Any]]:
    """The rows up to and including `message` and the state checkpointed at it."""
    anchor = _checkpoint_source(message)
    snapshot = get_graph(message.conversation.workflow).get_state(
        thread_config(str(anchor.conversation_id), anchor.checkpoint_id)
    )
    rows = list(message.conversation.messages.filter(position__lte=message.position))
    return rows, dict(snapshot.values)


def conversation_branch(
    *, conversation: Conversation, message: Message, user: User, content: str | None = None
) -> Conversation:
    """A new conversation continuing `conversation` from `message`.

    At a reply: the history up to and including it. At a user message: edit and resend,
    i.e. the history before it, then that message (or `content`, its edited text) sent as
    the branch's next turn, so the branch ends answered rather than with a question twice."""
    if message.conversation_id != conversation.pk:
        raise ApplicationError(
            "The message is not part of this conversation.",
            code="validation_error",
            details={"message_id": ["Not a message of this conversation."]},
        )
    resend = message.role == Message.Role.USER
    if content is not None and not resend:
        raise ApplicationError(
            "`content` edits a user message: branch at one to resend it changed.",
            code="validation_error",
            details={"content": ["Only when message_id is a user message."]},
        )
    lineage = {
        "parent": conversation,
        "branch_point": message,
        "title": f"{conversation} (branch)"[:300],
    }
    if not resend:
        rows, values = _history_through(message)
        return _copy_into(
            source=conversation, owner=user, rows=rows, values=values, lineage=lineage
        )
    text = _validate_content(message.content if content is None else content)
    before = conversation.messages.filter(position__lt=message.position).order_by("-position")
    previous = before.first()
    rows, values = _history_through(previous) if previous is not None else ([], {})
    branch = _copy_into(source=conversation, owner=user, rows=rows, values=values, lineage=lineage)
    try:
        message_send(user=user, conversation_id=branch.pk, content=text)
    except ApplicationError as exc:
        # The branch exists, with the message and the failed reply: say where.
        exc.details = {**exc.details, "conversation_id": str(branch.pk)}  # type: ignore[dict-item]
        raise
    branch.refresh_from_db()
    return branch


def conversation_fork(*, conversation: Conversation, user: User) -> Conversation:
    """An independent full copy of `conversation`: every message, and the thread's latest
    state (a failed last turn included: its question, unanswered; and any later summary)."""
    state = get_graph(conversation.workflow).get_state(thread_config(str(conversation.pk)))
    return _copy_into(
        source=conversation,
        owner=user,
        rows=list(conversation.messages.all()),
        values=dict(state.values),
        lineage={"forked_from": conversation, "title": f"{conversation} (fork)"[:300]},
    )


# --- feedback ----------------------------------------------------------------------------------
FEEDBACK_RANGES = {Message.FeedbackScale.THUMBS: (-1, 1), Message.FeedbackScale.STARS: (1, 5)}


def message_feedback(
    *, message: Message, scale: str, rating: int, comment: str, user: User
) -> Message:
    """Rate a reply on a named scale: thumbs (-1, 0, 1) or stars (1 to 5)."""
    if message.role != Message.Role.ASSISTANT:
        raise NotFound(
            "Only assistant replies take feedback; this message is not one.",
            code="not_a_reply",
            details={"message_id": ["Not an assistant reply."]},
        )
    low, high = FEEDBACK_RANGES[scale]  # type: ignore[index]
    if not low <= rating <= high:
        raise ApplicationError(
            f"On the {scale} scale, a rating is from {low} to {high}.",
            code="validation_error",
            details={"rating": [f"From {low} to {high}."]},
        )
    message.feedback_scale = scale
    message.feedback_rating = rating
    message.feedback_comment = comment
    message.feedback_at = timezone.now()
    message.save(
        update_fields=["feedback_scale", "feedback_rating", "feedback_comment", "feedback_at"]
    )
    return message
