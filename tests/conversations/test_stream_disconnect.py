"""A client that disconnects mid-stream, against a real uvicorn server on loopback."""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Iterator

import httpx
import pytest
from django.db import connection

from conversations.checkpointer import thread_config
from conversations.graph import get_graph
from conversations.models import Conversation, Message
from tests.servers import uvicorn_server

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def server(tmp_path) -> Iterator[str]:
    env = {"CHATTER_PROVIDER_MODULES": "bench.providers,tests.conversations.gated_provider"}
    database = connection.settings_dict["NAME"]
    with uvicorn_server(database=database, log_path=tmp_path / "server.log", env=env) as (url, _):
        yield url


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


def test_a_full_stream_over_uvicorn_arrives_incrementally(server, user, api_client, tmp_path):
    gate = tmp_path / "open"  # the model sends its first token, then waits for this file
    conversation = Conversation.objects.create(owner=user, model=f"gated:{gate}")
    events: list[str] = []
    first_delta_before_the_gate = False
    with httpx.stream(
        "POST",
        f"{server}/api/v1/conversations/{conversation.pk}/messages/stream/",
        json={"content": "count"},
        headers={"Authorization": f"Bearer {api_client.raw_key}"},
        timeout=120,
    ) as response:
        for line in response.iter_lines():
            if line.startswith("event: "):
                events.append(line[7:])
                if events[-1] == "delta" and not gate.exists():
                    # Streamed, not buffered: this token arrived while the rest of the
                    # reply could not exist yet.
                    first_delta_before_the_gate = True
                    gate.touch()
            if line.startswith("data: ") and events[-1] == "done":
                done = json.loads(line[6:])

    assert first_delta_before_the_gate
    assert events.count("delta") == 5 and events[-1] == "done", events
    assert Message.objects.get(pk=done["assistant_message_id"]).status == "complete"


def _send_then_reset(base: str, conversation: Conversation, raw_key: str) -> None:
    """POST a stream request and reset the connection (RST, no FIN) as soon as the turn
    has stored the user's message: the moment the server starts answering."""
    host, port = base.removeprefix("http://").split(":")
    body = json.dumps({"content": "are you there?"}).encode()
    request = (
        f"POST /api/v1/conversations/{conversation.pk}/messages/stream/ HTTP/1.1\r\n"
        f"Host: {host}\r\nAuthorization: Bearer {raw_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    before = Message.objects.filter(conversation=conversation).count()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(request)
        deadline = time.monotonic() + 30
        while Message.objects.filter(conversation=conversation).count() == before:
            if time.monotonic() > deadline:
                break  # not stored at all: the reset below tests that case instead
            time.sleep(0.001)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_a_client_that_resets_right_after_sending_frees_its_conversation(server, user, api_client):
    conversation = Conversation.objects.create(owner=user, model="local", workflow="basic")
    url = f"{server}/api/v1/conversations/{conversation.pk}/messages/"
    headers = {"Authorization": f"Bearer {api_client.raw_key}"}

    for attempt in range(8):
        _send_then_reset(server, conversation, api_client.raw_key)

        # The vanished turn ends (finished or released) on its own; a claim left behind
        # would hold the conversation until it went stale, 600 s later.
        wait_for(
            lambda: Conversation.objects.filter(
                pk=conversation.pk, turn_started_at__isnull=True
            ).exists(),
            timeout=90,
        )
        response = httpx.post(url, json={"content": f"next {attempt}"}, headers=headers, timeout=60)
        assert response.status_code == 201, response.text

    conversation.refresh_from_db()
    assert conversation.turn_started_at is None


def test_a_running_turn_renews_its_claim_and_a_killed_ones_is_taken_over(
    user, api_client, tmp_path, settings
):
    # A turn's claim is renewed while it runs, so that the stale limit can be short: a
    # process killed mid-turn (SIGKILL: nothing of it runs after) left its conversation
    # refusing every message with 409 for ten minutes.
    gate = tmp_path / "never-opened"  # the model sends one token, then waits
    conversation = Conversation.objects.create(owner=user, model=f"gated:{gate}")
    env = {
        "CHATTER_PROVIDER_MODULES": "bench.providers,tests.conversations.gated_provider",
        "CHATTER_TURN_HEARTBEAT_SECONDS": "0.2",
    }
    database = connection.settings_dict["NAME"]
    with (
        uvicorn_server(database=database, log_path=tmp_path / "server.log", env=env) as (
            url,
            process,
        ),
        httpx.stream(
            "POST",
            f"{url}/api/v1/conversations/{conversation.pk}/messages/stream/",
            json={"content": "Hold on"},
            headers={"Authorization": f"Bearer {api_client.raw_key}"},
            timeout=60,
        ) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        while next(lines) != "event: delta":
            pass
        claimed = Conversation.objects.get(pk=conversation.pk).turn_started_at
        assert claimed is not None
        # Renewed while the model waits (the heartbeat, not the first token's write).
        wait_for(lambda: Conversation.objects.get(pk=conversation.pk).turn_started_at > claimed)
        process.kill()
        process.wait()

    settings.CHATTER_TURN_STALE_SECONDS = 3600
    busy = api_client.post(
        f"/api/v1/conversations/{conversation.pk}/messages/", {"content": "Hi?"}, format="json"
    )
    assert busy.status_code == 409  # a claim is kept until it goes stale
    Conversation.objects.filter(pk=conversation.pk).update(model="local", workflow="basic")
    settings.CHATTER_TURN_STALE_SECONDS = 1

    def sent():
        response = api_client.post(
            f"/api/v1/conversations/{conversation.pk}/messages/",
            {"content": "Anyone there?"},
            format="json",
        )
        return response.status_code == 201

    wait_for(sent)  # taken over once no heartbeat renewed it for the stale limit
    dead_reply = Message.objects.filter(conversation=conversation, role="assistant").order_by(
        "position"
    )[0]
    assert dead_reply.status == "incomplete"  # what the killed turn left says so
