"""One turn: claim and store the question, run the graph, store the reply (or the failure)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models.functions import Now
from psycopg.types.json import Jsonb

from accounts.models import User
from conversations.checkpointer import get_checkpointer
from conversations.events import message_event_emit
from conversations.models import Conversation, Message, ModelPrice, ToolApproval
from conversations.pricing import catalog_cost
from conversations.providers import (
    LOCAL_MODEL_NAME,
    default_model_spec,
    provider_failure,
    split_spec,
)
from conversations.selectors import conversation_get
from conversations.services.summaries import summary_schedule_if_due
from conversations.services.threads import run_config
from core.errors import ApplicationError, Conflict, NotFound
from experiments.services import turn_metrics_record, turn_overrides

if TYPE_CHECKING:  # LangChain loads with the first turn, not at django.setup() (issue 10)
    from langchain_core.messages import AIMessage, BaseMessage

    from agents.runtime import AgentSettings


EXPERIMENT_CONFIGURABLE = ("system_prompt", "temperature", "max_tokens")


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


@dataclass
class Turn:
    conversation: Conversation
    user_message: Message
    assistant_message: Message
    model: str
    started: float
    # An agent's turn (workflow `agent`): its settings for this reply, the routing that
    # chose it (agent "auto"), and, when the turn resumes after an approval, the decision
    # and what the paused part had produced and taken.
    agent: AgentSettings | None = None
    route: list[dict[str, Any]] | None = None
    resume: dict[str, Any] | None = None
    prior_latency_ms: int = 0
    seeded: list[Any] = dataclasses.field(default_factory=list)  # the paused part's messages
    # The running experiments this reply is written under (experiments.services): their
    # variants' configuration overrides the conversation's or the agent's settings.
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    experiments: list[Any] = dataclasses.field(default_factory=list)

    def config(self) -> dict[str, Any]:
        config = run_config(self.conversation, self.model, reply_id=str(self.assistant_message.pk))
        agent = self.agent
        if agent is not None:
            config["configurable"].update(
                temperature=agent.temperature,
                max_tokens=agent.max_tokens,
                system_prompt=agent.system_prompt,
                fallback_model=agent.fallback_model,
                agent_tools=agent.tools,
                approval_tools=sorted(agent.approval_tools),
            )
        # An experiment's variant (prompt, parameters) wins over both; its model is turn.model.
        config["configurable"].update(
            {k: v for k, v in self.overrides.items() if k in EXPERIMENT_CONFIGURABLE}
        )
        return config

    def graph_input(self) -> Any:
        from langchain_core.messages import HumanMessage

        if self.resume is not None:
            from langgraph.types import Command

            return Command(resume=self.resume)
        return {"messages": [HumanMessage(self.user_message.content, id=str(self.user_message.pk))]}


def message_content_check(content: str) -> str:
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
      AND NOT EXISTS (SELECT 1 FROM {approval}
                      WHERE conversation_id = %(conversation_id)s AND status = 'pending')
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
        approval=ToolApproval._meta.db_table,
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
    content = message_content_check(content)
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
    with transaction.atomic():  # the claim and its message.received event commit together
        claimed = list(Conversation.objects.raw(sql, params))
        if claimed:
            user_message.position = claimed[0].first_position
            message_event_emit("message.received", user_message, owner_id=claimed[0].owner_id)
    if not claimed:
        if conversation_get(user=user, conversation_id=conversation_id) is None:
            raise NotFound("Not found.")
        pending = ToolApproval.objects.filter(
            conversation_id=conversation_id, status=ToolApproval.Status.PENDING
        ).first()
        if pending is not None:
            raise Conflict(
                f"The reply is waiting for approval of a {pending.tool_name} call; approve or "
                "reject it before sending another message.",
                code="approval_pending",
                details={"approval_id": str(pending.pk), "tool": pending.tool_name},
            )
        raise Conflict(
            "A reply is still being produced in this conversation; send again when it ends.",
            code="turn_in_progress",
        )
    conversation = claimed[0]
    user_message.position = conversation.first_position
    reply.position = conversation.first_position + 1
    user_message.conversation = reply.conversation = conversation
    reply.model = conversation.model or params["default_model"]
    turn = Turn(conversation, user_message, reply, reply.model, time.monotonic())
    if conversation.workflow == Conversation.Workflow.AGENT:
        from conversations.services.agent_turns import agent_turn_prepare

        try:
            agent_turn_prepare(turn, user=user)
        except Exception as exc:
            failure = turn_fail(turn=turn, exc=exc)
            if failure is None:
                raise
            raise failure from exc
    _experiments_apply(turn, user=user)
    return turn


def _experiments_apply(turn: Turn, *, user: User) -> None:
    """The variants of the running experiments that cover this conversation's owner (or
    its agent) for this reply: their prompt, model, parameters or workflow."""
    conversation = turn.conversation
    owner = user if user.pk == conversation.owner_id else conversation.owner
    turn.overrides, turn.experiments = turn_overrides(
        user=owner,
        agent_id=conversation.agent_id,
        workflow=conversation.workflow,
        message_id=turn.assistant_message.pk,
    )
    if "model" in turn.overrides:
        turn.model = turn.assistant_message.model = turn.overrides["model"]
    if "workflow" in turn.overrides:
        conversation.workflow = turn.overrides["workflow"]  # this turn's graph; never saved


def _experiments_record(
    turn: Turn, assistant: Message, *, error: str = "", timed: bool = True
) -> None:
    """The reply's latency (unless not ``timed``: an abandoned reply's is not the variant's),
    tokens, cost and error as its experiments' metric events."""
    if turn.experiments:
        turn_metrics_record(
            assignments=turn.experiments,
            message_id=assistant.pk,
            latency_ms=assistant.latency_ms if timed else None,
            tokens_in=assistant.tokens_in,
            tokens_out=assistant.tokens_out,
            cost=assistant.cost,
            error=error,
        )


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
        content = %(content)s, status = %(status)s, model = %(model)s, tokens_in = %(tokens_in)s,
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
    """Follows a graph run's `values` and `checkpoints` events: the final state, every model
    message of the turn (a loop of model -> tool -> model has several; the last is the
    reply) and tool result, an interrupt that paused it, and the checkpoints whose state
    ends with the user's message and with the reply (where a branch from either message
    starts), without reading checkpoint history back."""

    MODES = ["values", "checkpoints"]

    def __init__(self, turn: Turn) -> None:
        self.user_id = str(turn.user_message.pk)
        self.state: dict[str, Any] = {}
        self.interrupts: tuple[Any, ...] = ()
        self._earlier: set[str | None] | None = None  # the ids in the run's input state
        self._steps: dict[str, BaseMessage] = {}  # this turn's model messages, by id, in order
        self._results: dict[str, BaseMessage] = {}  # its tool results, by tool call id
        self._checkpoint_ending: dict[str | None, str] = {}  # last message id -> checkpoint
        # A resumed turn: the user's checkpoint was stored when it paused.
        self._user_checkpoint = turn.user_message.checkpoint_id if turn.resume else ""

    def seed(self, messages: list[BaseMessage]) -> None:
        """A resumed turn: the model messages and tool results its paused part produced."""
        for message in messages:
            if message.type == "ai":
                self._steps[str(message.id)] = message
            elif message.type == "tool":
                self._results[str(getattr(message, "tool_call_id", ""))] = message

    def see(self, mode: str, payload: Any) -> list[BaseMessage]:
        """Take one event; returns the messages the run added since the last one."""
        added: list[BaseMessage] = []
        if mode == "values":
            messages = payload.get("messages") or []
            if self._earlier is None:  # the first values event is the input: history, question
                self._earlier = {m.id for m in messages}
            for message in messages:
                if message.id in self._earlier:
                    continue
                if message.type == "ai" and str(message.id) not in self._steps:
                    self._steps[str(message.id)] = message
                    added.append(message)
                elif message.type == "tool":
                    call_id = str(getattr(message, "tool_call_id", ""))
                    if call_id not in self._results:
                        self._results[call_id] = message
                        added.append(message)
            self.interrupts = tuple(payload.get("__interrupt__") or ())
            if not self.interrupts:
                self.state = payload
        elif mode == "checkpoints":
            messages = payload["values"].get("messages") or []
            if messages:
                checkpoint_id = payload["config"]["configurable"]["checkpoint_id"]
                self._checkpoint_ending[messages[-1].id] = checkpoint_id
        return added

    @property
    def context_before(self) -> int | None:
        """The messages in the model's context before this turn's question (None before the
        run's first event)."""
        return None if self._earlier is None else max(0, len(self._earlier) - 1)

    @property
    def steps(self) -> list[BaseMessage]:
        """The turn's model messages in order, the reply last."""
        return list(self._steps.values()) or (self.state.get("messages") or [])[-1:]

    @property
    def steps_finished(self) -> list[BaseMessage]:
        """The model messages the run has completed so far (none from the local fallback)."""
        return list(self._steps.values())

    @property
    def reply(self) -> BaseMessage:
        return self.steps[-1]

    @property
    def user_checkpoint(self) -> str:
        return self._user_checkpoint or self._checkpoint_ending.get(self.user_id, "")

    @property
    def reply_checkpoint(self) -> str:
        return self._checkpoint_ending.get(self.reply.id, "")

    def model_used(self, default: str) -> str:
        """The model that wrote the reply (an agent's fallback, when its primary failed)."""
        metadata = getattr(self.steps[-1], "response_metadata", None) or {} if self.steps else {}
        return metadata.get("chatter_model") or default

    def tool_trace(self, pending: str = "") -> list[dict[str, Any]]:
        """Every tool call of the turn in call order: {id, name, args, result (an excerpt),
        latency_ms, error, approval}; `pending` names a call that waits for approval."""
        from agents.services import TOOL_RESULT_EXCERPT_CHARS

        trace = []
        for step in self._steps.values():
            for call in getattr(step, "tool_calls", None) or []:
                entry: dict[str, Any] = {
                    "id": call["id"],
                    "name": call["name"],
                    "args": call["args"],
                    "result": None,
                    "latency_ms": None,
                    "error": "",
                    "approval": "pending" if call["id"] == pending else None,
                }
                result = self._results.get(str(call["id"]))
                if result is not None:
                    metadata = result.response_metadata or {}
                    text = str(result.content)[:TOOL_RESULT_EXCERPT_CHARS]
                    failed = getattr(result, "status", "success") == "error"
                    entry.update(
                        result=text,
                        latency_ms=metadata.get("latency_ms"),
                        error=text if failed else "",
                        approval=metadata.get("approval"),
                    )
                trace.append(entry)
        return trace


def _reply_metadata(turn: Turn, state: dict[str, Any]) -> dict[str, Any]:
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
    if turn.agent is not None:
        extra.update(turn.agent.describe())
    if turn.route is not None:
        extra["route"] = turn.route
    if turn.experiments:
        extra["experiments"] = [assignment.describe() for assignment in turn.experiments]
    return extra


def turn_finish(
    *,
    turn: Turn,
    steps: list[BaseMessage],
    state: dict[str, Any],
    checkpoints: tuple[str, str],
    status: str = Message.Status.COMPLETE,
    tool_calls: list[dict[str, Any]] | None = None,
) -> Message:
    """Store the reply (the last of the turn's model messages) with the turn's usage, tool
    calls and cost, summed over its model messages; roll totals up; release the
    conversation."""
    usage = [getattr(step, "usage_metadata", None) or {} for step in steps]
    assistant = turn.assistant_message
    assistant.content = str(steps[-1].content)
    assistant.status = status
    assistant.model = turn.model
    assistant.tokens_in = sum(int(u.get("input_tokens", 0)) for u in usage)
    assistant.tokens_out = sum(int(u.get("output_tokens", 0)) for u in usage)
    assistant.latency_ms = turn.prior_latency_ms + int((time.monotonic() - turn.started) * 1000)
    assistant.tool_calls = (
        tool_calls
        if tool_calls is not None
        else [call for step in steps for call in (getattr(step, "tool_calls", None) or [])]
    )
    assistant.checkpoint_id = checkpoints[1]
    extra = _reply_metadata(turn, state)
    assistant.metadata = {**assistant.metadata, **extra}
    turn.user_message.checkpoint_id = checkpoints[0]
    sql = _FINISH_SQL.format(
        price=ModelPrice._meta.db_table,
        message=Message._meta.db_table,
        conversation=Conversation._meta.db_table,
    )
    with transaction.atomic(), connection.cursor() as cursor:  # the reply and message.sent
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
                "model": turn.model,
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
        if row is not None:
            (assistant.cost,) = row
            message_event_emit(
                "message.sent",
                assistant,
                owner_id=turn.conversation.owner_id,
                status=status,
                model=assistant.model,
                tokens_in=assistant.tokens_in,
                tokens_out=assistant.tokens_out,
                latency_ms=assistant.latency_ms,
                cost=assistant.cost,
            )
    if row is None:  # deleted meanwhile: its rows are gone, nothing was updated
        raise _conversation_gone(turn)
    return assistant


def turn_claim_renew(turn: Turn) -> None:
    """The running turn still holds its conversation (its heartbeat): a claim renewed
    within CHATTER_TURN_STALE_SECONDS is not taken over. A released claim stays released."""
    Conversation.objects.filter(pk=turn.conversation.pk, turn_started_at__isnull=False).update(
        turn_started_at=Now()
    )


def turn_fail(*, turn: Turn, exc: Exception) -> ApplicationError | None:
    """Keep the user's message, mark the reply as an error, release the conversation.
    A conversation deleted meanwhile answers ConversationDeleted (404)."""
    failure = exc if isinstance(exc, ApplicationError) else provider_failure(exc)
    text = failure.message if failure else f"Internal error: {type(exc).__name__}"
    with transaction.atomic():
        Message.objects.filter(pk=turn.assistant_message.pk).update(
            status=Message.Status.ERROR,
            error=text,
            model=turn.model,
            latency_ms=turn.prior_latency_ms + int((time.monotonic() - turn.started) * 1000),
        )
        released = Conversation.objects.filter(pk=turn.conversation.pk).update(turn_started_at=None)
    if not released:
        return _conversation_gone(turn)
    if isinstance(exc, ConversationDeleted):
        return exc
    turn.assistant_message.refresh_from_db()
    if turn.agent is not None:
        from conversations.services.agent_turns import agent_reply_record

        agent_reply_record(turn, turn.assistant_message, tracker=None, error=text)
    _experiments_record(turn, turn.assistant_message, error=text)
    return failure


def _partial_reply(turn: Turn, partial: str) -> AIMessage:
    from langchain_core.messages import AIMessage

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
    from langchain_core.messages import AIMessage

    from conversations.graph import MODEL_NODE, get_graph

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
        assistant = turn_finish(
            turn=turn,
            # The turn's finished model steps (a tool loop's), then what the reply got to.
            steps=[*tracker.steps_finished, AIMessage(partial)],
            state=graph.get_state(turn.config()).values,
            checkpoints=(tracker.user_checkpoint, reply_checkpoint),
            status=Message.Status.INCOMPLETE,
            tool_calls=tracker.tool_trace() if turn.agent is not None else None,
        )
        # Its experiments count the tokens and cost it spent (and the reply, unfinished); a
        # reader's leaving is neither the variant's error nor its response time.
        _experiments_record(turn, assistant, timed=False)


def turn_complete(turn: Turn, tracker: RunTracker) -> Message:
    """Store a completed run's reply and schedule its summary if one is due."""
    agent = turn.agent is not None
    if agent:
        turn.model = tracker.model_used(turn.model)
    assistant = turn_finish(
        turn=turn,
        steps=tracker.steps,
        state=tracker.state,
        checkpoints=(tracker.user_checkpoint, tracker.reply_checkpoint),
        tool_calls=tracker.tool_trace() if agent else None,
    )
    if agent:
        from conversations.services.agent_turns import agent_reply_record

        agent_reply_record(turn, assistant, tracker=tracker)
    _experiments_record(turn, assistant)
    summary_schedule_if_due(
        conversation=turn.conversation, state=tracker.state, context_before=tracker.context_before
    )
    return assistant
