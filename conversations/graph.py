"""LangGraph workflows for conversations, compiled once per workflow type.

Why and how: docs/architecture.md, "conversations/graph.py".
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

from django.conf import settings as django_settings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AnyMessage, BaseMessage, RemoveMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph

from accounts.models import User
from conversations.checkpointer import get_checkpointer
from conversations.local_model import LocalChatModel
from conversations.memory import extractive_summary, split_for_summary, summary_request
from conversations.providers import ModelOptions, chat_model, written_without_model
from conversations.workflows import workflow_get
from core.asyncdb import db_call
from core.errors import ApplicationError
from knowledge.models import Document
from knowledge.search import knowledge_search

logger = logging.getLogger(__name__)

MODEL_NODE = "model"


class ChatState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    summary: str
    summarized: int  # how many of the oldest messages the summary stands for
    sources: list[dict[str, Any]]  # this turn's retrieved passages (rag), numbered from 1
    retrieval_error: str


@dataclass(frozen=True)
class TurnSettings:
    model: str
    temperature: float | None
    max_tokens: int | None
    system_prompt: str
    memory_window: int
    reply_id: str
    user_id: int | None = None
    retrieval_k: int = 4
    relevance_floor: float | None = None

    @classmethod
    def of(cls, config: RunnableConfig) -> TurnSettings:
        c = config.get("configurable", {})
        return cls(
            model=c["model"],
            temperature=c.get("temperature"),
            max_tokens=c.get("max_tokens"),
            system_prompt=c.get("system_prompt", ""),
            memory_window=c["memory_window"],
            reply_id=c["reply_id"],
            user_id=c.get("user_id"),
            retrieval_k=c.get("retrieval_k", 4),
            relevance_floor=c.get("relevance_floor"),
        )

    def chat_model(self) -> BaseChatModel:
        return chat_model(self.model, ModelOptions(self.temperature, self.max_tokens))


# --- memory ---------------------------------------------------------------------------------
def _forget(state: ChatState, old: list[BaseMessage], summary: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "summarized": state.get("summarized", 0) + len(old),
        "messages": [RemoveMessage(id=m.id) for m in old if m.id],
    }


def _remembered(state: ChatState, update: dict[str, Any]) -> ChatState:
    """The state as the model sees it once the memory update is applied."""
    if not update:
        return state
    removed = {m.id for m in update["messages"]}
    return {
        "messages": [m for m in state["messages"] if m.id not in removed],
        "summary": update["summary"],
        "summarized": update["summarized"],
    }


def _inline_trigger(settings: TurnSettings) -> int:
    # Summaries are normally written in the background after a turn (the
    # conversation_summarization job), so a reply never waits for one; a turn compacts
    # the context itself only when that job has fallen this far behind.
    return settings.memory_window * django_settings.CHATTER_MEMORY_INLINE_FACTOR


async def remember(
    state: ChatState, settings: TurnSettings, model: BaseChatModel, *, trigger: int | None = None
) -> dict[str, Any]:
    """The memory update (summary + RemoveMessages) due for this state, or {}."""
    old, _ = split_for_summary(
        state["messages"], settings.memory_window, trigger=trigger or _inline_trigger(settings)
    )
    if not old:
        return {}
    previous = state.get("summary", "")
    if isinstance(model, LocalChatModel):
        return _forget(state, old, extractive_summary(previous, old))
    # Not given the run's config, so the summary's tokens don't stream as reply text.
    response = await model.ainvoke(summary_request(previous, old))
    return _forget(state, old, str(response.content))


# --- retrieval (the rag workflow) ------------------------------------------------------------
SOURCES_INSTRUCTIONS = (
    "Answer from the numbered sources below when they are relevant, citing them like [1] or "
    "[2]. If they do not contain the answer, say so, then answer from general knowledge."
)


def retrieve_sources(
    user_id: int | None, query: str, k: int, floor: float | None = None
) -> dict[str, Any]:
    """The owner's passages that best match the question, numbered for citation: at most
    k, and only those whose cosine similarity to it reaches the relevance floor (the
    conversation's, else CHATTER_RAG_RELEVANCE_FLOOR), so a reference list or a postscript
    that merely ranks among the k best is not handed to the model."""
    if floor is None:
        floor = django_settings.CHATTER_RAG_RELEVANCE_FLOOR
    if not user_id or not query.strip():
        return {"sources": []}
    if not Document.objects.filter(owner_id=user_id).searchable().exists():
        return {"sources": []}  # no documents: don't load the embedding model for nothing
    try:
        hits = knowledge_search(
            user=User.objects.get(pk=user_id),
            query=query[:2000],
            k=k,
            own_only=True,
            similarity_threshold=floor,
        )
    except ApplicationError as exc:
        # The reply goes on without sources; the reason is kept on the message.
        logger.warning("retrieval failed: %s", exc.message)
        return {"sources": [], "retrieval_error": exc.message}
    return {
        "sources": [
            {
                "n": index,
                "chunk_id": hit.chunk_id,
                "document_id": str(hit.document_id),
                "title": hit.document_title,
                "page": hit.page,
                "section": hit.section,
                "score": round(hit.score, 4),
                "similarity": None if hit.similarity is None else round(hit.similarity, 4),
                "content": hit.content,
            }
            for index, hit in enumerate(hits, start=1)
        ],
        "retrieval_error": "",
    }


def _question(state: ChatState) -> str:
    for message in reversed(state["messages"]):
        if message.type == "human":
            return str(message.content)
    return ""


async def retrieve_node(state: ChatState, config: RunnableConfig) -> dict[str, Any]:
    settings = TurnSettings.of(config)
    database = config.get("configurable", {}).get("db_call", db_call)
    return await database(
        retrieve_sources,
        settings.user_id,
        _question(state),
        settings.retrieval_k,
        settings.relevance_floor,
    )


def format_sources(sources: list[dict[str, Any]]) -> str:
    return "\n\n".join(f"[{s['n']}] ({s['title']}) {s['content']}" for s in sources)


# --- the model ----------------------------------------------------------------------------
def _prompt(state: ChatState, settings: TurnSettings) -> list[BaseMessage]:
    system = settings.system_prompt.strip()
    if state.get("summary"):
        system = f"{system}\n\nSummary of the earlier conversation:\n{state['summary']}".strip()
    if state.get("sources"):
        sources = format_sources(state["sources"])
        system = f"{system}\n\n{SOURCES_INSTRUCTIONS}\n\nSources:\n{sources}".strip()
    head: list[BaseMessage] = [SystemMessage(system)] if system else []
    # Replies the `local` provider composed stay in the record but not in the model's
    # context: a model must not be shown them as turns it wrote. Their questions stay, so
    # the model sees them as what they were: unanswered.
    return head + [m for m in state["messages"] if not written_without_model(m)]


def _with_reply(
    memory: dict[str, Any], reply: BaseMessage, settings: TurnSettings
) -> dict[str, Any]:
    # Every model message of a turn has an id of its own, so that in a loop of model ->
    # tool -> model add_messages does not replace an earlier one. The message that answers
    # (it asks for no tool) carries the reply's id, its Message row's.
    reply.id = str(uuid.uuid4()) if getattr(reply, "tool_calls", None) else settings.reply_id
    return {**memory, "messages": [*memory.get("messages", []), reply]}


# Memory and the model share one node (one superstep, one checkpoint per turn beyond the
# input's): the summary is folded in before the model is called, in the same update.
def _model_for(state: ChatState, settings: TurnSettings) -> BaseChatModel:
    model = settings.chat_model()
    if isinstance(model, LocalChatModel) and state.get("sources"):
        return model.model_copy(update={"sources": state["sources"]})
    return model


async def model_node(state: ChatState, config: RunnableConfig) -> dict[str, Any]:
    settings = TurnSettings.of(config)
    model = _model_for(state, settings)
    memory = await remember(state, settings, model)
    reply = await model.ainvoke(_prompt(_remembered(state, memory), settings), config)
    return _with_reply(memory, reply, settings)


def build_basic() -> StateGraph:
    builder = StateGraph(ChatState)
    builder.add_node(MODEL_NODE, model_node)
    builder.add_edge(START, MODEL_NODE)
    builder.add_edge(MODEL_NODE, END)
    return builder


def build_rag() -> StateGraph:
    """Retrieval from the owner's knowledge base, then the model with numbered sources."""
    builder = StateGraph(ChatState)
    builder.add_node("retrieve", retrieve_node)
    builder.add_node(MODEL_NODE, model_node)
    builder.add_edge(START, "retrieve")
    builder.add_edge("retrieve", MODEL_NODE)
    builder.add_edge(MODEL_NODE, END)
    return builder


WORKFLOWS: dict[str, Callable[[], StateGraph]] = {"basic": build_basic, "rag": build_rag}
_compiled: dict[tuple[str, int], CompiledStateGraph] = {}


def _build_agent() -> StateGraph:
    from conversations.agent_graph import build_agent  # it builds on this module's nodes

    return build_agent()


WORKFLOWS["agent"] = _build_agent


def get_graph(workflow: str = "basic") -> CompiledStateGraph:
    """The compiled graph for a workflow type, on this process's checkpointer: a built-in
    one, else one registered in ``conversations.workflows`` (a plugin's)."""
    checkpointer = get_checkpointer()
    build = WORKFLOWS.get(workflow)
    revision = ""
    if build is None:
        spec = workflow_get(workflow)
        if spec is None:
            raise ApplicationError(
                f"The workflow {workflow!r} is not available (its plugin is not enabled).",
                code="workflow_unavailable",
                status=409,
            )
        build, revision = spec.build, spec.revision
    key = (workflow, id(checkpointer), revision)
    if key not in _compiled:
        _compiled[key] = build().compile(checkpointer=checkpointer)
    return _compiled[key]
