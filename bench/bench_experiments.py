"""Experiments: what a running experiment adds to a conversation turn, and how long the
results take over many events.

1. Chat turns (in process, `message_send`, a zero-latency model) of a user no experiment
   covers against turns of a user one running prompt experiment covers (its variant's
   prompt applied, an exposure stored, five metric events written per reply), interleaved
   in the same run: p50/p99 and their ratio (goal <= 1.2x).
2. The results of an experiment with 20,000 units and 100,000 events on two metrics,
   against the bare SQL aggregate they start from (goal: the statistics add <= 2x).

Runs against its own database (`chatter_bench`) on the embedded server (or DATABASE_URL's).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatter_project.settings")
os.environ["CHATTER_DB_NAME"] = "chatter_bench"
os.environ["CHATTER_PROVIDER_MODULES"] = "bench.providers"

from bench.bench_conversations import ensure_database, percentile  # noqa: E402

TURNS = int(os.environ.get("BENCH_TURNS", "200"))
UNITS, EVENTS = 20_000, 100_000


def main() -> None:
    ensure_database()
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    from accounts.services import user_ensure
    from conversations.models import Conversation
    from conversations.services import message_send
    from experiments.models import Experiment
    from experiments.services import experiment_create, experiment_start

    plain, _ = user_ensure(username="bench-plain")
    covered, _ = user_ensure(username="bench-experiment")
    Experiment.objects.filter(owner__in=[plain, covered]).delete()
    experiment = experiment_create(
        owner=covered,
        name="Bench prompt",
        key="bench-prompt",
        type="prompt",
        allocation="weighted",
        variants=[
            {"name": "control", "is_control": True, "weight": 0},
            {"name": "terse", "configuration": {"system_prompt": "Be terse."}},
        ],
        metrics=[
            {"name": "latency", "type": "response_time", "primary": True},
            {"name": "tokens", "type": "token_usage"},
            {"name": "spend", "type": "cost"},
            {"name": "errors", "type": "error_rate"},
            {"name": "turns", "type": "engagement"},
        ],
    )
    experiment_start(experiment=experiment, actor=covered)

    def conversation(owner):
        return Conversation.objects.create(owner=owner, model="instant:ok", memory_window=1000)

    a, b = conversation(plain), conversation(covered)
    times: dict[str, list[float]] = {"plain": [], "covered": []}
    for index in range(TURNS + 20):
        if index % 50 == 0:  # fresh conversations: history length alike on both sides
            a, b = conversation(plain), conversation(covered)
        for name, user, conv in (("plain", plain, a), ("covered", covered, b)):
            started = time.perf_counter()
            _, reply = message_send(user=user, conversation_id=conv.pk, content=f"Hi {index}")
            elapsed = time.perf_counter() - started
            if name == "covered":
                assert reply.metadata["experiments"][0]["variant"] == "terse"
            if index >= 20:
                times[name].append(elapsed)
    p50 = {k: percentile(v, 0.5) * 1000 for k, v in times.items()}
    p99 = {k: percentile(v, 0.99) * 1000 for k, v in times.items()}
    print(f"chat turns, {TURNS} each, interleaved, zero-latency model, in process")
    print(f"  no experiment            p50 {p50['plain']:7.2f} ms  p99 {p99['plain']:7.2f} ms")
    print(f"  one running experiment   p50 {p50['covered']:7.2f} ms  p99 {p99['covered']:7.2f} ms")
    print(
        f"  ratio p50 {p50['covered'] / p50['plain']:.2f}x  "
        f"p99 {p99['covered'] / p99['plain']:.2f}x  (goal <= 1.2x)"
    )

    _results_bench(connection)


def _results_bench(connection) -> None:
    import numpy as np

    from accounts.services import user_ensure
    from experiments.assignment import variant_for
    from experiments.models import Assignment, Experiment, MetricEvent
    from experiments.selectors import _UNIT_SQL, experiment_results
    from experiments.services import experiment_create, experiment_start

    owner, _ = user_ensure(username="bench-results")
    Experiment.objects.filter(owner=owner).delete()
    experiment = experiment_create(
        owner=owner,
        name="Bench results",
        key="bench-results",
        type="prompt",
        variants=[
            {"name": "control", "is_control": True},
            {"name": "b", "configuration": {"system_prompt": "B."}},
            {"name": "c", "configuration": {"system_prompt": "C."}},
        ],
        metrics=[
            {"name": "latency", "type": "response_time", "primary": True},
            {"name": "signup", "type": "conversion"},
        ],
    )
    experiment_start(experiment=experiment, actor=owner)
    variants = list(experiment.variants.all())
    Assignment.objects.bulk_create(
        [
            Assignment(
                experiment=experiment,
                variant=variant_for(experiment, variants, f"u{i}"),
                unit_id=f"u{i}",
                source="api",
            )
            for i in range(UNITS)
        ],
        batch_size=5000,
    )
    assignments = list(Assignment.objects.filter(experiment=experiment))
    rng = np.random.default_rng(1)
    picks = rng.integers(0, len(assignments), size=EVENTS)
    MetricEvent.objects.bulk_create(
        [
            MetricEvent(
                experiment=experiment,
                variant_id=assignments[i].variant_id,
                assignment=assignments[i],
                metric="latency" if n % 5 else "signup",
                value=float(rng.gamma(4, 200)) if n % 5 else 1.0,
                source="client",
            )
            for n, i in enumerate(picks)
        ],
        batch_size=5000,
    )
    sql = _UNIT_SQL.format(aggregate="avg", events=MetricEvent._meta.db_table)
    bare, full = [], []
    for _ in range(12):
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(sql, [experiment.pk, "latency"])
            cursor.fetchall()
            cursor.execute(sql, [experiment.pk, "signup"])
            cursor.fetchall()
        middle = time.perf_counter()
        experiment_results(experiment=experiment)
        ended = time.perf_counter()
        bare.append(middle - started)
        full.append(ended - middle)
    bare_ms, full_ms = percentile(bare[2:], 0.5) * 1000, percentile(full[2:], 0.5) * 1000
    print(f"results of {UNITS} units, {EVENTS} events, 3 variants, 2 metrics (p50 of 10)")
    print(f"  the two per-unit aggregates alone   {bare_ms:7.2f} ms")
    print(f"  experiment_results (all of it)      {full_ms:7.2f} ms")
    print(f"  ratio {full_ms / bare_ms:.2f}x  (goal <= 2x)")


if __name__ == "__main__":
    main()
