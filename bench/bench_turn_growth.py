"""Conversations: does a turn cost more as the conversation grows?

Two conversations with the same settings: one already holds PREFILL turns, the other none.
Their turns are then interleaved one for one, so both see the same machine load, and the
figure is p50(long conversation) / p50(new conversation), for a memory window of 20 (the
default: the model's context is bounded, so the turn should be too; goal <= 1.15x) and of
1000 (the context grows with the conversation, and so does the checkpointed state the turn
writes).

Through the API (uvicorn, one worker), zero-latency `instant:` model, own database.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench.bench_conversations import bench_setup, percentile, start_server  # noqa: E402

PREFILL = int(os.environ.get("BENCH_GROWTH_PREFILL", "350"))
ROUNDS = int(os.environ.get("BENCH_GROWTH_ROUNDS", "60"))


def turns(client, conversation_id: str, count: int) -> list[float]:
    elapsed = []
    for index in range(count):
        started = time.perf_counter()
        response = client.post(
            f"/api/v1/conversations/{conversation_id}/messages/",
            json={"content": f"Tell me about point {index}."},
        )
        elapsed.append(time.perf_counter() - started)
        assert response.status_code == 201, response.text
    return elapsed


def main() -> None:
    user, key = bench_setup("bench-growth")
    import httpx
    from django.db import connection

    from conversations.models import Conversation

    pairs = {
        window: [
            str(
                Conversation.objects.create(
                    owner=user, model="instant:Fine thanks.", memory_window=window
                ).pk
            )
            for _ in range(2)
        ]
        for window in (20, 1000)
    }
    connection.close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = start_server(port)
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        ) as client:
            for window, (long, new) in pairs.items():
                turns(client, new, 5)  # warm the process on this window's path
                turns(client, long, PREFILL)
                long_times, new_times = [], []
                for _ in range(ROUNDS):
                    new_times += turns(client, new, 1)
                    long_times += turns(client, long, 1)
                new_p50 = percentile(new_times, 0.5) * 1000
                long_p50 = percentile(long_times, 0.5) * 1000
                goal = "  (goal <= 1.15x)" if window == 20 else ""
                print(
                    f"memory window {window:4d}: turn p50 at {PREFILL + 5}-{PREFILL + 5 + ROUNDS} "
                    f"turns {long_p50:6.2f} ms, at 5-{5 + ROUNDS} turns {new_p50:6.2f} ms, "
                    f"ratio {long_p50 / new_p50:.2f}x{goal}"
                )

            # The issue's own measure: one conversation, turns 350-399 against turns 0-49.
            # Each of its turns is paired with one in a control conversation that is
            # replaced every 50 turns (always young), which shows how much of the change
            # is the machine's load or the tables' growth rather than this history.
            def fresh() -> str:
                made = Conversation.objects.create(
                    owner=user, model="instant:Fine thanks.", memory_window=20
                )
                connection.close()
                return str(made.pk)

            single, times, control_times = fresh(), [], []
            for index in range(400):
                if index % 50 == 0:
                    control = fresh()
                control_times += turns(client, control, 1)
                times += turns(client, single, 1)

            def ratio(values: list[float]) -> tuple[float, float, float]:
                first, last = percentile(values[:50], 0.5), percentile(values[350:], 0.5)
                return first * 1000, last * 1000, last / first

            first, last, growth = ratio(times)
            drift = ratio(control_times)[2]
            print(
                f"memory window   20, one conversation: p50 turns 0-49 {first:6.2f} ms, "
                f"turns 350-399 {last:6.2f} ms, ratio {growth:.2f}x; a young control "
                f"conversation over the same span {drift:.2f}x; growth beyond it "
                f"{growth / drift:.2f}x (goal <= 1.15x)"
            )
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
