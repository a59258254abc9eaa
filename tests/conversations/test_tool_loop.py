"""A turn whose graph loops model -> tool -> model keeps each model message apart and
answers with the last one, its usage summed over the turn."""

from __future__ import annotations

import pytest
from langchain_core.language_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.graph import START, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from conversations import graph as conversation_graph
from conversations.checkpointer import thread_config
from conversations.graph import MODEL_NODE, ChatState, get_graph, model_node
from conversations.models import Conversation, Message
from conversations.providers import register_provider

pytestmark = pytest.mark.django_db

ASKS_FOR_WEATHER = AIMessage(
    "",
    tool_calls=[{"name": "weather", "args": {"city": "Oslo"}, "id": "call-1"}],
    usage_metadata={"input_tokens": 5, "output_tokens": 2, "total_tokens": 7},
)
ANSWERS = AIMessage(
    "Sunny in Oslo, says the forecast.",
    usage_metadata={"input_tokens": 9, "output_tokens": 6, "total_tokens": 15},
)


@tool
def weather(city: str) -> str:
    """Today's weather in a city."""
    return f"Sunny in {city}."


def build_tool_loop() -> StateGraph:
    """The real model node, a tool node, and the edge back: a two-step agent loop."""
    builder = StateGraph(ChatState)
    builder.add_node(MODEL_NODE, model_node)
    builder.add_node("tools", ToolNode([weather]))
    builder.add_edge(START, MODEL_NODE)
    builder.add_conditional_edges(MODEL_NODE, tools_condition)
    builder.add_edge("tools", MODEL_NODE)
    return builder


@pytest.fixture
def tool_loop_conversation(user, monkeypatch):
    monkeypatch.setitem(conversation_graph.WORKFLOWS, "tool_loop", build_tool_loop)
    monkeypatch.setattr(conversation_graph, "_compiled", dict(conversation_graph._compiled))
    # One model for the turn: it asks for the tool first, then answers.
    model = FakeMessagesListChatModel(responses=[ASKS_FOR_WEATHER, ANSWERS])
    register_provider("tool-loop", lambda name, options: model)
    return Conversation.objects.create(owner=user, workflow="tool_loop", model="tool-loop:x")


def test_each_model_message_of_a_tool_loop_is_kept_and_the_last_is_the_reply(
    send, tool_loop_conversation
):
    response = send(tool_loop_conversation, "What is the weather in Oslo?")

    assert response.status_code == 201, response.content
    reply = response.json()["assistant_message"]
    assert reply["content"] == "Sunny in Oslo, says the forecast."
    assert reply["status"] == "complete"
    assert (reply["tokens_in"], reply["tokens_out"]) == (5 + 9, 2 + 6)
    assert reply["tool_calls"] == [
        {"name": "weather", "args": {"city": "Oslo"}, "id": "call-1", "type": "tool_call"}
    ]
    state = get_graph("tool_loop").get_state(thread_config(str(tool_loop_conversation.pk)))
    messages = state.values["messages"]
    assert [m.type for m in messages] == ["human", "ai", "tool", "ai"]
    asked, answered = messages[1], messages[3]
    assert asked.id != answered.id
    assert asked.tool_calls[0]["name"] == "weather"
    assert messages[2].content == "Sunny in Oslo."
    assert answered.id == reply["id"]
    assert answered.content == reply["content"]
    stored = Message.objects.get(pk=reply["id"])
    assert stored.checkpoint_id == state.config["configurable"]["checkpoint_id"]


def test_the_conversation_totals_count_every_model_message_of_the_turn(
    send, tool_loop_conversation
):
    send(tool_loop_conversation, "What is the weather in Oslo?")

    tool_loop_conversation.refresh_from_db()
    assert (tool_loop_conversation.tokens_in, tool_loop_conversation.tokens_out) == (14, 8)
    assert tool_loop_conversation.message_count == 2
