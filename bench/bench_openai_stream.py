"""The OpenAI-compatible endpoint's streamed chunks per second against the conversation SSE
stream, in the same run.

One agent (no tools) whose zero-latency model (`paced:<tokens>:0`, `bench.providers`)
streams TOKENS tokens, asked through both surfaces of one uvicorn worker: POST
/api/openai/v1/chat/completions with `stream: true` (stateless: no rows but the agent
interaction) and POST /api/v1/conversations/{id}/messages/stream/ in a fresh conversation
bound to the agent each time (a claim, two messages, the checkpointed thread, the priced
reply, the interaction). Content chunks are counted on the client as they arrive.

1. Sequential: one stream at a time, the two surfaces interleaved (ROUNDS each, after
   WARMUP): chunks per second over the streams' wall time, time to the first chunk.
2. Concurrent: CONCURRENCY streams at once on one surface, then on the other, BATCHES
   times: aggregate chunks per second.

Both clients parse every event's JSON, so the client's share of the 2 cores is the same.

Runs against its own database (`chatter_bench`) on the embedded server (or DATABASE_URL's).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_conversations import bench_setup, percentile, start_server

TOKENS = int(os.environ.get("BENCH_TOKENS", "200"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "40"))
WARMUP = 5
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "20"))
BATCHES = 3


async def openai_stream(client, slug: str) -> tuple[int, float, float]:
    """(content chunks, seconds to the first, seconds in all) of one streamed completion."""
    started = time.perf_counter()
    chunks, first = 0, 0.0
    body = {
        "model": slug,
        "messages": [{"role": "user", "content": "go"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with client.stream("POST", "/api/openai/v1/chat/completions", json=body) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            assert "error" not in data, data
            if data["choices"] and data["choices"][0]["delta"].get("content"):
                chunks += 1
                if chunks == 1:
                    first = time.perf_counter() - started
    return chunks, first, time.perf_counter() - started


async def conversation_stream(client, conversation_id: str) -> tuple[int, float, float]:
    started = time.perf_counter()
    chunks, first, done = 0, 0.0, False
    async with client.stream(
        "POST", f"/api/v1/conversations/{conversation_id}/messages/stream/", json={"content": "go"}
    ) as response:
        assert response.status_code == 200, await response.aread()
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])  # parsed, as the OpenAI side's chunks are
                if event == "delta" and data["content"]:
                    chunks += 1
                    if chunks == 1:
                        first = time.perf_counter() - started
            if line == "event: done":
                done = True
            elif line == "event: error":
                raise AssertionError("the conversation stream failed")
    assert done
    return chunks, first, time.perf_counter() - started


def rate(results: list[tuple[int, float, float]]) -> float:
    return sum(r[0] for r in results) / sum(r[2] for r in results)


async def measure(base: str, key: str, slug: str, conversations: list[str]) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=CONCURRENCY + 10, max_keepalive_connections=0)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(
        base_url=base, headers=headers, timeout=120, limits=limits
    ) as client:
        pending = iter(conversations)
        sequential_openai, sequential_conversation = [], []
        for index in range(ROUNDS + WARMUP):
            a = await openai_stream(client, slug)
            b = await conversation_stream(client, next(pending))
            assert a[0] == b[0] == TOKENS, (a, b)
            if index >= WARMUP:
                sequential_openai.append(a)
                sequential_conversation.append(b)

        # Batches alternate, so neither surface alone pays for the pool's growth or a
        # burst of load from elsewhere.
        walls = {"openai": 0.0, "conversation": 0.0}
        counts = {"openai": 0, "conversation": 0}
        for _ in range(BATCHES):
            for surface in ("openai", "conversation"):
                started = time.perf_counter()
                if surface == "openai":
                    runs = [openai_stream(client, slug) for _ in range(CONCURRENCY)]
                else:
                    runs = [conversation_stream(client, next(pending)) for _ in range(CONCURRENCY)]
                together = await asyncio.gather(*runs)
                walls[surface] += time.perf_counter() - started
                assert all(r[0] == TOKENS for r in together)
                counts[surface] += sum(r[0] for r in together)
    return {
        "sequential": (sequential_openai, sequential_conversation),
        "concurrent": (
            counts["openai"] / walls["openai"],
            counts["conversation"] / walls["conversation"],
        ),
    }


def main() -> None:
    user, key = bench_setup("bench-openai")
    from django.db import connection

    from agents.models import Agent
    from agents.services import agent_create
    from conversations.models import Conversation

    model = f"paced:{TOKENS}:0"
    agent = Agent.objects.filter(owner=user, slug="bench-streamer").first() or agent_create(
        actor=user, name="Bench streamer", slug="bench-streamer", model=model, tools=[]
    )
    if agent.model != model:
        Agent.objects.filter(pk=agent.pk).update(model=model)
    conversations = [
        str(Conversation.objects.create(owner=user, agent=agent, workflow="agent").pk)
        for _ in range(ROUNDS + WARMUP + CONCURRENCY * BATCHES)
    ]
    connection.close()

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = start_server(port)
    try:
        figures = asyncio.run(measure(f"http://127.0.0.1:{port}", key, agent.slug, conversations))
    finally:
        server.terminate()
        server.wait(timeout=30)

    openai_runs, conversation_runs = figures["sequential"]
    openai_rate, conversation_rate = rate(openai_runs), rate(conversation_runs)
    print(
        f"streamed chunks per second, agent without tools, zero-latency model, {TOKENS} tokens, "
        "one uvicorn worker"
    )
    print(f"  sequential, {ROUNDS} streams each, interleaved:")
    for name, runs, value in (
        ("OpenAI-compatible chat/completions", openai_runs, openai_rate),
        ("conversation messages/stream/   ", conversation_runs, conversation_rate),
    ):
        firsts = [r[1] * 1000 for r in runs]
        walls = [r[2] * 1000 for r in runs]
        print(
            f"    {name}  {value:8.0f} chunks/s  stream p50 {percentile(walls, 0.5):6.1f} ms  "
            f"first chunk p50 {percentile(firsts, 0.5):5.1f} ms"
        )
    print(f"    ratio OpenAI / conversation: {openai_rate / conversation_rate:.2f}x")
    openai_together, conversation_together = figures["concurrent"]
    print(f"  concurrent, {CONCURRENCY} streams at once, {BATCHES} batches on each, alternating:")
    print(f"    OpenAI-compatible chat/completions  {openai_together:8.0f} chunks/s")
    print(f"    conversation messages/stream/       {conversation_together:8.0f} chunks/s")
    print(f"    ratio OpenAI / conversation: {openai_together / conversation_together:.2f}x")


if __name__ == "__main__":
    main()
