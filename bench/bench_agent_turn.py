"""An agent's turn with one tool call: Chatter against a bare LangGraph tool loop.

One turn through Chatter's API (uvicorn, one worker, HTTP from this process) in a
conversation bound to an agent whose zero-latency model (`instant-tool:calculator`) calls
the calculator once and then answers, against a bare LangGraph graph (model node, ToolNode,
tools_condition) with the same model and tool on a PostgresSaver on the same database,
interleaved in the same run: p50/p99 and their ratio (goal <= 1.5x). Chatter's side also
claims the conversation, resolves the agent, chooses no variant (it has none), records the
tool trace, the reply, its cost and the agent interaction.

Runs against its own database (`chatter_bench`) on the embedded server (or DATABASE_URL's).
"""

from __future__ import annotations

import os
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_conversations import bench_setup, percentile, start_server

TURNS = int(os.environ.get("BENCH_TURNS", "200"))


def bare_tool_turn(conninfo: str):
    from langchain_core.messages import HumanMessage
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    from agents.tools.registry import ToolContext, tool_get
    from bench.providers import _instant_tool
    from conversations.providers import ModelOptions

    calculator = tool_get("calculator").factory(ToolContext(user=None))  # type: ignore[arg-type]
    model = _instant_tool("calculator", ModelOptions()).bind_tools([calculator])

    def call(state: MessagesState) -> dict:
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("model", call)
    builder.add_node("tools", ToolNode([calculator]))
    builder.add_edge(START, "model")
    builder.add_conditional_edges("model", tools_condition)
    builder.add_edge("tools", "model")
    saver_context = PostgresSaver.from_conn_string(conninfo)
    saver = saver_context.__enter__()
    saver.setup()
    graph = builder.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": f"bare-tools-{time.time()}"}}

    def turn(index: int) -> None:
        result = graph.invoke(
            {"messages": [HumanMessage(f"What is six times seven? {index}")]}, config
        )
        assert result["messages"][-1].content == "The tool said 42."

    return turn, saver_context


def main() -> None:
    user, key = bench_setup("bench-agent")
    import httpx
    from django.db import connection

    from agents.models import Agent
    from agents.services import agent_create
    from conversations.checkpointer import _conninfo
    from conversations.models import Conversation

    agent = Agent.objects.filter(owner=user, slug="bench-calculator").first() or agent_create(
        actor=user,
        name="Bench calculator",
        slug="bench-calculator",
        model="instant-tool:calculator",
        tools=["calculator"],
    )
    conversation = Conversation.objects.create(
        owner=user, agent=agent, workflow="agent", memory_window=1000
    )
    conninfo = _conninfo()
    connection.close()

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = start_server(port)
    bare_turn, saver_context = bare_tool_turn(conninfo)
    bare, api = [], []
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        ) as client:
            for index in range(TURNS + 20):
                started = time.perf_counter()
                bare_turn(index)
                middle = time.perf_counter()
                response = client.post(
                    f"/api/v1/conversations/{conversation.pk}/messages/",
                    json={"content": f"What is six times seven? {index}"},
                )
                ended = time.perf_counter()
                assert response.status_code == 201, response.text
                reply = response.json()["assistant_message"]
                assert reply["content"] == "The tool said 42." and len(reply["tool_calls"]) == 1
                if index >= 20:  # warm-up
                    bare.append(middle - started)
                    api.append(ended - middle)
    finally:
        saver_context.__exit__(None, None, None)
        server.terminate()
        server.wait(timeout=30)

    bare_p50, bare_p99 = percentile(bare, 0.5) * 1000, percentile(bare, 0.99) * 1000
    api_p50, api_p99 = percentile(api, 0.5) * 1000, percentile(api, 0.99) * 1000
    print(f"agent turn with one tool call, {TURNS} turns each, interleaved, zero-latency model")
    print(
        f"  bare LangGraph tool loop + PostgresSaver  p50 {bare_p50:7.2f} ms  p99 {bare_p99:7.2f} ms"
    )
    print(
        f"  Chatter agent turn (HTTP, uvicorn)        p50 {api_p50:7.2f} ms  p99 {api_p99:7.2f} ms"
        f"  mean {statistics.mean(api) * 1000:.2f} ms"
    )
    print(f"  ratio p50 {api_p50 / bare_p50:.2f}x  p99 {api_p99 / bare_p99:.2f}x  (goal <= 1.5x)")


if __name__ == "__main__":
    main()
