"""A client that disconnects mid-stream, against a real uvicorn server on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from django.conf import settings
from django.db import connection

from conversations.checkpointer import thread_config
from conversations.graph import get_graph
from conversations.models import Conversation, Message

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def server() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "CHATTER_DATA_DIR": str(settings.DATA_DIR),
        "CHATTER_DB_NAME": connection.settings_dict["NAME"],
        "CHATTER_PROVIDER_MODULES": "bench.providers",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "chatter_project.asgi:application",
            "--port",
            str(port),
            "--lifespan",
            "off",
        ],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/api/v1/health/").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    yield base
    process.terminate()
    process.communicate(timeout=30)


def wait_for(predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_a_disconnect_mid_stream_keeps_the_message_and_the_partial_reply(server, user, api_client):
    conversation = Conversation.objects.create(owner=user, model="paced:60:40")  # 60 tokens, 2.4 s
    deltas = 0
    with httpx.stream(
        "POST",
        f"{server}/api/v1/conversations/{conversation.pk}/messages/stream/",
        json={"content": "Tell me a long story"},
        headers={"Authorization": f"Bearer {api_client.raw_key}"},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line == "event: delta":
                deltas += 1
            if deltas == 5:
                break  # leave mid-stream: the connection closes with the context

    reply = wait_for(
        lambda: (
            Message.objects.filter(conversation=conversation, role="assistant", status="incomplete")
            .exclude(content="")
            .first()
        )
    )
    assert reply.content.startswith("t0 t1 t2 t3")
    assert len(reply.content.split()) < 60  # really cut short
    assert (
        Message.objects.get(conversation=conversation, role="user").content
        == "Tell me a long story"
    )
    conversation.refresh_from_db()
    assert conversation.turn_started_at is None  # released: the next message is accepted
    state = get_graph().get_state(thread_config(str(conversation.pk))).values
    assert state["messages"][-1].content == reply.content  # the context matches the record


def test_a_full_stream_over_uvicorn_arrives_incrementally(server, user, api_client):
    conversation = Conversation.objects.create(owner=user, model="paced:10:100")  # 1 s in all
    # Whether the finished reply was already stored when each event arrived: a buffered
    # response would deliver its first delta only after the reply was complete.
    stored_at_arrival: list[bool] = []
    replies = Message.objects.filter(conversation=conversation, role="assistant")
    with httpx.stream(
        "POST",
        f"{server}/api/v1/conversations/{conversation.pk}/messages/stream/",
        json={"content": "count"},
        headers={"Authorization": f"Bearer {api_client.raw_key}"},
        timeout=30,
    ) as response:
        events = []
        for line in response.iter_lines():
            if line.startswith("event: "):
                events.append(line[7:])
                stored_at_arrival.append(replies.filter(status="complete").exists())
            if line.startswith("data: ") and events[-1] == "done":
                done = json.loads(line[6:])

    assert events.count("delta") == 10 and events[-1] == "done"
    # Streamed, not buffered: the first tokens arrived while the reply was still being written.
    # (and the probe sees the stored reply: by the "done" event it is there).
    assert events[1] == "delta" and stored_at_arrival[1] is False
    assert stored_at_arrival[-1] is True
    assert Message.objects.get(pk=done["assistant_message_id"]).status == "complete"
