from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from conversations.checkpointer import thread_config
from conversations.graph import get_graph
from conversations.memory import SUMMARY_INSTRUCTIONS, extractive_summary
from conversations.models import Conversation

pytestmark = pytest.mark.django_db


def test_past_the_window_old_messages_become_a_summary_and_the_context_shrinks(
    api_client, send, user
):
    conversation = Conversation.objects.create(owner=user, model="local", memory_window=4)
    for text in [
        "My name is Ada.",
        "I live in Lisbon.",
        "I keep bees.",
        "Bees like lavender.",
        "What do you know?",
    ]:
        send(conversation, text)

    conversation.refresh_from_db()
    state = get_graph().get_state(thread_config(str(conversation.pk))).values
    assert conversation.messages.count() == 10  # every row stays
    assert len(state["messages"]) <= 5  # the model's context does not
    assert conversation.summarized_messages + len(state["messages"]) == 10
    assert "Ada" in conversation.summary and conversation.summary == state["summary"]
    body = api_client.get(f"/api/v1/conversations/{conversation.pk}/").json()
    assert body["summary"] == conversation.summary and body["summarized_messages"] > 0


def test_a_language_model_writes_the_summary_and_then_receives_it(send, user, openai_server):
    conversation = Conversation.objects.create(
        owner=user, model="openai:test-model", memory_window=4
    )
    for index in range(4):
        send(conversation, f"Fact number {index}.")

    summarize = [
        r for r in openai_server.requests if r["messages"][0]["content"] == SUMMARY_INSTRUCTIONS
    ]
    assert len(summarize) == 1
    assert "Fact number 0." in summarize[0]["messages"][1]["content"]
    last = openai_server.requests[-1]["messages"]
    assert last[0]["role"] == "system"
    assert "Summary of the earlier conversation:\n" + openai_server.reply in last[0]["content"]
    assert len(last) - 1 <= 4
    conversation.refresh_from_db()
    assert conversation.summary == openai_server.reply


def test_the_extractive_summary_keeps_the_sentences_that_matter():
    messages = [
        HumanMessage("The launch is on Friday. I had cereal."),
        AIMessage("Friday launch noted. The launch needs the new rocket."),
        HumanMessage("Weather is nice."),
    ]

    summary = extractive_summary("", messages, max_chars=120)

    assert len(summary) <= 120
    assert "launch" in summary and "cereal" not in summary
    assert summary.index("Friday") < summary.index("rocket")  # original order kept
