from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from langchain_core.messages import AIMessage, HumanMessage

from conversations.checkpointer import checkpoints_prune_orphans, get_checkpointer, thread_config
from conversations.graph import get_graph
from conversations.memory import SUMMARY_INSTRUCTIONS, extractive_summary
from conversations.models import Conversation
from conversations.services import conversation_summarize
from core.errors import Conflict
from jobs.models import Job

pytestmark = pytest.mark.django_db

FACTS = [
    "My name is Ada.",
    "I live in Lisbon.",
    "I keep bees.",
    "Bees like lavender.",
    "What do you know?",
]


def context_of(conversation) -> dict:
    return get_graph().get_state(thread_config(str(conversation.pk))).values


def test_past_the_window_a_summary_job_is_queued_once(send, user):
    conversation = Conversation.objects.create(owner=user, model="local", memory_window=4)
    for text in FACTS:
        send(conversation, text)

    jobs = Job.objects.filter(handler="conversation_summarization")
    assert jobs.count() == 1  # deduplicated while pending
    assert jobs.get().args == {"conversation_id": str(conversation.pk)}
    assert jobs.get().priority == "low"


def test_only_the_turn_that_crosses_the_window_schedules_a_summary(send, user):
    conversation = Conversation.objects.create(owner=user, model="local", memory_window=4)
    for text in FACTS[:3]:  # 6 messages: the third turn crosses the window of 4
        send(conversation, text)
    job = Job.objects.get(handler="conversation_summarization")
    Job.objects.filter(pk=job.pk).update(status="cancelled")  # a job no longer pending

    send(conversation, FACTS[3])  # still past the window, but it did not cross it

    assert Job.objects.filter(handler="conversation_summarization").count() == 1


def test_the_summary_job_shrinks_the_context_and_keeps_every_row(api_client, send, user):
    conversation = Conversation.objects.create(owner=user, model="local", memory_window=4)
    for text in FACTS[:4]:
        send(conversation, text)
    assert len(context_of(conversation)["messages"]) == 8  # below the inline limit (2 windows)

    result = conversation_summarize(conversation_id=str(conversation.pk))

    conversation.refresh_from_db()
    state = context_of(conversation)
    assert result["summarized"] == 6
    assert conversation.messages.count() == 8  # every row stays
    assert len(state["messages"]) == 2  # the model's context does not
    assert conversation.summarized_messages + len(state["messages"]) == 8
    assert "Ada" in conversation.summary and conversation.summary == state["summary"]
    assert conversation.turn_started_at is None
    body = api_client.get(f"/api/v1/conversations/{conversation.pk}/").json()
    assert body["summary"] == conversation.summary and body["summarized_messages"] == 6
    assert send(conversation, "Still there?").status_code == 201


def test_a_language_model_writes_the_summary_and_then_receives_it(send, user, openai_server):
    conversation = Conversation.objects.create(
        owner=user, model="openai:test-model", memory_window=4
    )
    for index in range(3):
        send(conversation, f"Fact number {index}.")

    conversation_summarize(conversation_id=str(conversation.pk))
    send(conversation, "And now?")

    summarize = [
        r for r in openai_server.requests if r["messages"][0]["content"] == SUMMARY_INSTRUCTIONS
    ]
    assert len(summarize) == 1
    assert "Fact number 0." in summarize[0]["messages"][1]["content"]
    last = openai_server.requests[-1]["messages"]
    assert "Summary of the earlier conversation:\n" + openai_server.reply in last[0]["content"]
    assert len(last) - 1 == 3  # two kept + the new question
    conversation.refresh_from_db()
    assert conversation.summary == openai_server.reply


def test_a_turn_summarizes_inline_when_the_job_falls_behind(send, user):
    conversation = Conversation.objects.create(owner=user, model="local", memory_window=4)
    for index in range(5):  # 8 messages in context before the 5th turn: twice the window
        send(conversation, f"Point {index} about apiculture.")

    state = context_of(conversation)
    assert len(state["messages"]) < 10
    assert state["summary"]


def test_a_summary_never_runs_during_a_reply(user):
    conversation = Conversation.objects.create(
        owner=user, model="local", turn_started_at=timezone.now()
    )

    with pytest.raises(Conflict):
        conversation_summarize(conversation_id=str(conversation.pk))


def test_maintenance_prunes_checkpoints_of_conversations_deleted_behind_its_back(send, user):
    gone = Conversation.objects.create(owner=user, model="instant:ok")
    kept = Conversation.objects.create(owner=user, model="instant:ok")
    send(gone)
    send(kept)
    Conversation.objects.filter(pk=gone.pk).delete()  # not through the service

    checkpoints_prune_orphans()  # the default leaves threads touched in the last hour
    assert get_checkpointer().get_tuple(thread_config(str(gone.pk))) is not None
    checkpoints_prune_orphans(older_than=timedelta(0))

    assert get_checkpointer().get_tuple(thread_config(str(gone.pk))) is None
    assert get_checkpointer().get_tuple(thread_config(str(kept.pk))) is not None


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


@pytest.mark.django_db(transaction=True)
def test_a_background_summary_never_refuses_a_sequential_client(send, user, settings):
    """100 turns sent back to back, each after the previous reply, while summaries run
    beside them as fast as they can (a worker that never lets up): every turn is a 201."""
    settings.RATELIMIT_ENABLE = False  # 100 turns in seconds: past the expensive rate class
    conversation = Conversation.objects.create(owner=user, model="local", memory_window=4)
    stop = threading.Event()
    outcomes: list[str] = []

    def summarize_without_pause() -> None:
        try:
            while not stop.is_set():
                try:
                    result = conversation_summarize(conversation_id=str(conversation.pk))
                    outcomes.append("summarized" if result["summarized"] else "nothing")
                except Conflict:
                    outcomes.append("busy")
        finally:
            connection.close()

    summarizer = threading.Thread(target=summarize_without_pause)
    summarizer.start()
    try:
        statuses = [
            send(conversation, f"Point {n} about apiculture.").status_code for n in range(100)
        ]
    finally:
        stop.set()
        summarizer.join()

    assert [s for s in statuses if s != 201] == [] and len(statuses) == 100
    assert "summarized" in outcomes  # the summaries really ran beside the turns
    conversation.refresh_from_db()
    assert conversation.message_count == 200
    state = context_of(conversation)
    assert conversation.summarized_messages + len(state["messages"]) == 200


def test_a_summary_overtaken_by_a_reply_is_not_applied_twice(send, user, monkeypatch):
    conversation = Conversation.objects.create(owner=user, model="local", memory_window=4)
    for text in FACTS[:4]:
        send(conversation, text)
    from conversations import graph as graph_module

    real_remember = graph_module.remember

    async def remember_then_overtaken(state, settings, model, *, trigger=None):
        update = await real_remember(state, settings, model, trigger=trigger)
        # Meanwhile a reply's own inline summary folds the same messages in first.
        get_graph().update_state(
            thread_config(str(conversation.pk)), update, as_node=graph_module.MODEL_NODE
        )
        return update

    monkeypatch.setattr(graph_module, "remember", remember_then_overtaken)
    result = conversation_summarize(conversation_id=str(conversation.pk))

    assert result["summarized"] == 0 and "meanwhile" in result["reason"]
    state = context_of(conversation)
    assert state["summarized"] + len(state["messages"]) == 8
