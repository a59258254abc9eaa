"""Conversations: the cost of Chatter's turn over a bare LangGraph turn, and SSE capacity.

1. One chat turn through the API (uvicorn, one worker, HTTP from this process) against a
   bare LangGraph invoke with PostgresSaver on the same database, both with a zero-latency
   model, in the same run: p50/p99 and their ratio (goal <= 1.5x).
2. Concurrent SSE streams held by one server process, the model streaming 50 tokens 20 ms
   apart: 500 at once (goal none dropped, wall <= 2x ideal, first token p50 <= 0.5 s),
   against the same runs of bare LangGraph in one process.

Runs against its own database (`chatter_bench`) on the embedded server (or DATABASE_URL's).
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
from bench.support import percentile  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatter_project.settings")
os.environ["CHATTER_DB_NAME"] = "chatter_bench"
os.environ["CHATTER_PROVIDER_MODULES"] = "bench.providers"

TURNS = int(os.environ.get("BENCH_TURNS", "200"))
STREAMS = int(os.environ.get("BENCH_STREAMS", "500"))


def ensure_database() -> None:
    import psycopg

    from chatter_project import settings as s
    from core.embedded_db import embedded_database_ensure

    embedded_database_ensure()
    db = s.DATABASES["default"]
    params = {
        "host": db["HOST"],
        "port": db.get("PORT") or None,
        "user": db["USER"],
        "password": db["PASSWORD"] or None,
        "dbname": "postgres",
    }
    with psycopg.connect(**{k: v for k, v in params.items() if v}, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'chatter_bench'").fetchone():
            conn.execute("CREATE DATABASE chatter_bench")


def bare_langgraph_turn(conninfo: str):
    """A bare LangGraph turn: one model node, PostgresSaver, the same zero-latency model."""
    from langchain_core.messages import HumanMessage
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.graph import END, START, MessagesState, StateGraph

    from bench.providers import _instant
    from conversations.providers import ModelOptions

    model = _instant("Fine thanks.", ModelOptions())

    def call(state: MessagesState) -> dict:
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("model", call)
    builder.add_edge(START, "model")
    builder.add_edge("model", END)
    saver_context = PostgresSaver.from_conn_string(conninfo)
    saver = saver_context.__enter__()
    saver.setup()
    graph = builder.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": f"bare-{time.time()}"}}

    def turn(index: int) -> None:
        graph.invoke({"messages": [HumanMessage(f"Hello {index}")]}, config)

    return turn, saver_context


def bench_setup(key_name: str) -> tuple[Any, str]:
    """The bench database migrated, Django set up, and the bench user with an API key whose
    limits sit above any benchmark's rate: the figures measure the work, not the limiter's
    refusals (whose cost, one atomic cache statement per request, stays in them)."""
    ensure_database()
    import logging

    import django

    django.setup()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from accounts.services import api_key_create, user_ensure

    user, _ = user_ensure(username="bench")
    _, key = api_key_create(
        user=user, name=key_name, rate_limit="100000/m", expensive_rate_limit="100000/m"
    )
    return user, key


def start_server(port: int) -> subprocess.Popen:
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
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=BASE_DIR,
        env={**os.environ, "LOG_LEVEL": "WARNING", "DB_POOL_MAX": "40"},
    )
    import httpx

    # Up, and done with its start-up work: the embedding model loads in a background
    # thread of the web process (importing torch and sentence-transformers holds the GIL
    # for seconds), and a figure measured during it is the load's, not the turn's.
    for _ in range(600):
        try:
            ready = httpx.get(f"http://127.0.0.1:{port}/api/v1/ready/")
            if ready.status_code == 200 and ready.json()["embeddings"]["state"] not in (
                "not_loaded",
                "loading",
            ):
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not start")


def interleaved_turns(
    base: str, key: str, conversation_id: str, bare_turn, floors: list[float] | None = None
) -> tuple[list[float], list[float]]:
    """Alternate one bare turn and one API turn, so both see the same machine load. Given
    `floors`, also time a trivial authenticated request (the conversation's GET: HTTP,
    middleware, the key's check, one query) beside them: the part of a turn's cost that
    any API request pays, whatever it does."""
    import httpx

    bare, api = [], []
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        for index in range(TURNS + 20):
            started = time.perf_counter()
            bare_turn(index)
            middle = time.perf_counter()
            response = client.post(
                f"/api/v1/conversations/{conversation_id}/messages/",
                json={"content": f"Hello {index}"},
            )
            ended = time.perf_counter()
            assert response.status_code == 201, response.text
            if floors is not None:
                trivial = client.get(f"/api/v1/conversations/{conversation_id}/")
                assert trivial.status_code == 200, trivial.text
                if index >= 20:
                    floors.append(time.perf_counter() - ended)
            if index >= 20:
                bare.append(middle - started)
                api.append(ended - middle)
    return bare, api


def wal_flushes_per_turn(
    base: str, key: str, conversation_id: str, bare_turn
) -> tuple[float, float]:
    """WAL flushes (fsyncs, from pg_stat_io) per turn: 50 bare turns, then 50 API turns."""
    import httpx
    from django.db import connection

    def flushes() -> int:
        time.sleep(1.2)  # other backends report their I/O statistics about once a second
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_force_next_flush()")
            cursor.execute("SELECT coalesce(sum(fsyncs), 0) FROM pg_stat_io WHERE object = 'wal'")
            return int(cursor.fetchone()[0])

    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        start = flushes()
        for index in range(50):
            bare_turn(index)
        middle = flushes()
        for index in range(50):
            client.post(
                f"/api/v1/conversations/{conversation_id}/messages/", json={"content": f"{index}"}
            )
        end = flushes()
    connection.close()
    return (middle - start) / 50, (end - middle) / 50


async def bare_streams(conninfo: str, count: int) -> dict:
    """The baseline for the streams: `count` concurrent bare LangGraph runs in this process
    (one model node, AsyncPostgresSaver, the same paced model), each streaming its tokens
    (stream_mode="messages") to a reader that counts them; the CPU this process spent."""
    from langchain_core.messages import HumanMessage
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from langgraph.graph import END, START, MessagesState, StateGraph
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    from bench.providers import _paced
    from conversations.providers import ModelOptions

    model = _paced("50:20", ModelOptions())

    async def call(state: MessagesState) -> dict:
        return {"messages": [await model.ainvoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("model", call)
    builder.add_edge(START, "model")
    builder.add_edge("model", END)
    kwargs = {"autocommit": True, "row_factory": dict_row, "prepare_threshold": 0}
    async with AsyncConnectionPool(conninfo, max_size=10, kwargs=kwargs, open=False) as pool:
        saver = AsyncPostgresSaver(pool)
        await saver.setup()
        graph = builder.compile(checkpointer=saver)
        stamp = time.time()

        async def one(index: int) -> tuple[int, float]:
            config = {"configurable": {"thread_id": f"bare-stream-{stamp}-{index}"}}
            tokens, first, started = 0, 0.0, time.perf_counter()
            async for chunk, _meta in graph.astream(
                {"messages": [HumanMessage("go")]}, config, stream_mode="messages"
            ):
                if not chunk.content:  # the closing chunk carries no text
                    continue
                tokens += 1
                if tokens == 1:
                    first = time.perf_counter() - started
            return tokens, first

        cpu, started = time.process_time(), time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(count)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "complete": sum(1 for tokens, _ in results if tokens == 50),
        "elapsed": elapsed,
        "first_token_p50": statistics.median(first for _, first in results),
        "cpu_per_stream": cpu / count,
    }


def server_cpu_per_request(base: str, key: str, conversation_id: str, server_pid: int) -> float:
    """The server's CPU (user + system) per trivial authenticated GET, 300 one after another:
    the part of a stream's CPU that any API request costs (HTTP, middleware, the key's check,
    the rate limit's count, one query), whatever it does."""
    import httpx
    import psutil

    server = psutil.Process(server_pid)
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        before = sum(server.cpu_times()[:2])
        for _ in range(300):
            assert client.get(f"/api/v1/conversations/{conversation_id}/").status_code == 200
        return (sum(server.cpu_times()[:2]) - before) / 300


async def hold_streams(
    base: str, key: str, conversation_ids: list[str], server_pid: int | None = None
) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=len(conversation_ids) + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120, limits=limits
    ) as client:

        async def one(conversation_id: str) -> tuple[int, bool, float]:
            deltas, done, first = 0, False, 0.0
            started = time.perf_counter()
            try:
                async with client.stream(
                    "POST",
                    f"/api/v1/conversations/{conversation_id}/messages/stream/",
                    json={"content": "go"},
                ) as response:
                    async for line in response.aiter_lines():
                        if line == "event: delta":
                            deltas += 1
                            if deltas == 1:
                                first = time.perf_counter() - started
                        elif line == "event: done":
                            done = True
            except httpx.HTTPError:
                pass
            return deltas, done, first

        import psutil

        server = psutil.Process(server_pid) if server_pid else None
        cpu_before = sum(server.cpu_times()[:2]) if server else 0.0
        started = time.perf_counter()
        results = await asyncio.gather(*(one(cid) for cid in conversation_ids))
        elapsed = time.perf_counter() - started
        cpu = sum(server.cpu_times()[:2]) - cpu_before if server else 0.0
    complete = sum(1 for deltas, done, _ in results if deltas == 50 and done)
    firsts = [first for _, _, first in results if first]
    return {
        "streams": len(results),
        "complete": complete,
        "dropped": len(results) - complete,
        "elapsed": elapsed,
        "first_token_p50": percentile(firsts, 0.5) if firsts else None,
        "cpu_per_stream": cpu / len(results),
    }


def main() -> None:
    user, key = bench_setup("bench")
    from django.db import connection

    from conversations.checkpointer import _conninfo
    from conversations.models import Conversation

    # `basic`: one model node, the same graph as the bare baseline (`rag` adds a retrieval
    # step, measured on its own below).
    conversation = Conversation.objects.create(
        owner=user, model="instant:Fine thanks.", memory_window=1000, workflow="basic"
    )
    rag_conversation = Conversation.objects.create(
        owner=user, model="instant:Fine thanks.", memory_window=1000, workflow="rag"
    )
    stream_conversations = [
        str(Conversation.objects.create(owner=user, model="paced:50:20").pk) for _ in range(STREAMS)
    ]
    conninfo = _conninfo()
    connection.close()

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = start_server(port)
    base = f"http://127.0.0.1:{port}"
    bare_turn, saver_context = bare_langgraph_turn(conninfo)
    try:
        floors: list[float] = []
        bare, api = interleaved_turns(base, key, str(conversation.pk), bare_turn, floors)
        rag_bare, rag = interleaved_turns(base, key, str(rag_conversation.pk), bare_turn)
        bare_flushes, api_flushes = wal_flushes_per_turn(base, key, str(conversation.pk), bare_turn)
        streams = asyncio.run(hold_streams(base, key, stream_conversations, server.pid))
        floor_cpu = server_cpu_per_request(base, key, str(conversation.pk), server.pid)
        bare_stream = asyncio.run(bare_streams(conninfo, STREAMS))
    finally:
        saver_context.__exit__(None, None, None)
        server.terminate()
        server.wait(timeout=30)

    bare_p50, bare_p99 = percentile(bare, 0.5) * 1000, percentile(bare, 0.99) * 1000
    api_p50, api_p99 = percentile(api, 0.5) * 1000, percentile(api, 0.99) * 1000
    print(f"chat turn, {TURNS} sequential turns each, interleaved, zero-latency model")
    print(f"  bare LangGraph + PostgresSaver  p50 {bare_p50:7.2f} ms  p99 {bare_p99:7.2f} ms")
    print(
        f"  Chatter API (HTTP, uvicorn)     p50 {api_p50:7.2f} ms  p99 {api_p99:7.2f} ms  mean {statistics.mean(api) * 1000:.2f} ms"
    )
    print(f"  ratio p50 {api_p50 / bare_p50:.2f}x  p99 {api_p99 / bare_p99:.2f}x  (goal <= 1.5x)")
    floor_p50 = percentile(floors, 0.5) * 1000
    print(
        f"  floor: a trivial authenticated GET p50 {floor_p50:.2f} ms; the turn beyond it "
        f"{api_p50 - floor_p50:.2f} ms = {(api_p50 - floor_p50) / bare_p50:.2f}x bare LangGraph"
    )
    print(
        f"  WAL flushes per turn: bare {bare_flushes:.1f}, Chatter {api_flushes:.1f} "
        "(Chatter's intermediate writes are flushed by the turn's final commit)"
    )
    rag_p50, rag_bare_p50 = percentile(rag, 0.5) * 1000, percentile(rag_bare, 0.5) * 1000
    print(
        f"  rag workflow, owner without documents (retrieve step + model): p50 {rag_p50:.2f} ms "
        f"vs bare {rag_bare_p50:.2f} ms = {rag_p50 / rag_bare_p50:.2f}x"
    )
    print(
        f"SSE: {streams['streams']} concurrent streams, 50 tokens 20 ms apart, one server process"
    )
    print(
        f"  complete {streams['complete']}, dropped {streams['dropped']}, wall {streams['elapsed']:.2f} s "
        f"(ideal 1.0 s), first token p50 {streams['first_token_p50'] * 1000:.0f} ms"
    )
    print(
        f"  bare LangGraph, the same {STREAMS} runs in one process: complete "
        f"{bare_stream['complete']}, wall {bare_stream['elapsed']:.2f} s, first token p50 "
        f"{bare_stream['first_token_p50'] * 1000:.0f} ms"
    )
    print(
        f"  CPU per stream: Chatter's server {streams['cpu_per_stream'] * 1000:.1f} ms, bare "
        f"LangGraph {bare_stream['cpu_per_stream'] * 1000:.1f} ms = "
        f"{streams['cpu_per_stream'] / bare_stream['cpu_per_stream']:.2f}x; one core does "
        f"{1 / streams['cpu_per_stream']:.0f} streams/s, so {STREAMS} need "
        f">= {STREAMS * streams['cpu_per_stream']:.1f} s of wall (goal 2.0 s)"
    )
    beyond = streams["cpu_per_stream"] - floor_cpu
    print(
        f"  the floor: a trivial authenticated GET costs the server {floor_cpu * 1000:.1f} ms of "
        f"CPU; a stream beyond it {beyond * 1000:.1f} ms = "
        f"{beyond / bare_stream['cpu_per_stream']:.2f}x bare LangGraph"
    )


if __name__ == "__main__":
    main()
