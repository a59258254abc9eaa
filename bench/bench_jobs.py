"""Chatter's job queue against raw django-q2 on the same broker, in the same run.

    .venv/bin/python bench/bench_jobs.py [N]        (make bench; N defaults to 10,000)

Runs in a scratch database (`chatter_bench`, dropped afterwards) on the same PostgreSQL,
with the same django-q2 cluster settings (`CHATTER_WORKERS`, default 2) for both arms:

1. raw: N `async_task("operator.add", 1, 2)`, no result rows saved (`save=False`, as
   Chatter's tokens), then a cluster drains them;
2. chatter: N `jobs.services.enqueue("echo", priority=<random>)` (a mixed backlog), then a
   cluster plus the jobs clock drain them;
3. raw again; the baseline is the mean of 1 and 3, since the machine's load drifts.

Throughput is measured the same way for both: from the first to the last acknowledgement
of a django-q2 task (its broker row disappears), polled every 20 ms. Priority inversions:
pairs where a job started while a job of strictly higher priority, enqueued before the
backlog started draining, was still waiting. Enqueue latency: wall time of each call.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.support import drop_database, percentile, recreate_database  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatter_project.settings")
os.environ["CHATTER_DB_NAME"] = DB_NAME = "chatter_bench"

import django  # noqa: E402

django.setup()

from core.embedded_db import embedded_database_ensure  # noqa: E402

embedded_database_ensure()

from django_q.models import OrmQ  # noqa: E402
from django_q.tasks import async_task  # noqa: E402

from jobs.models import PRIORITY_RANK, Job, JobStatus  # noqa: E402
from jobs.services import enqueue  # noqa: E402

WORKERS = os.environ.get("CHATTER_WORKERS", "2")


def timed_enqueues(n: int, call) -> list[float]:  # type: ignore[no-untyped-def]
    latencies = []
    for i in range(n):
        started = time.perf_counter()
        call(i)
        latencies.append(time.perf_counter() - started)
    return latencies


def drain(with_clock: bool) -> float:
    """Start a cluster (and the clock), wait until the broker is empty; tasks per second."""
    env = {**os.environ, "CHATTER_WORKERS": WORKERS}
    manage = str(ROOT / "manage.py")
    commands = [[sys.executable, manage, "qcluster"]]
    if with_clock:
        commands.append([sys.executable, manage, "jobs_clock"])
    with tempfile.TemporaryFile("w+") as log:
        processes = [
            subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            for command in commands
        ]
        try:
            total = OrmQ.objects.count()
            first = last = None
            progress_at, seen = time.perf_counter(), total
            while True:
                left = OrmQ.objects.count()
                now = time.perf_counter()
                if first is None and left < total:
                    first = now
                if left == 0:
                    last = now
                    break
                if left != seen:
                    progress_at, seen = now, left
                if now - progress_at > 60 or any(p.poll() is not None for p in processes):
                    log.seek(0)
                    raise RuntimeError(
                        f"the queue stopped draining at {left}:\n{log.read()[-3000:]}"
                    )
                time.sleep(0.02)
            return (total - 1) / (last - first)
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                process.wait(timeout=60)


def inversions() -> int:
    """Pairs (a, b): b started while a, of strictly higher priority, was still waiting."""
    started = Job.objects.order_by("started_at", "id").values_list("priority", flat=True)
    waiting = [0, 0, 0, 0]
    ranks = [PRIORITY_RANK[p] for p in started]
    for rank in ranks:
        waiting[rank] += 1
    count = 0
    for rank in ranks:
        waiting[rank] -= 1
        count += sum(waiting[:rank])
    return count


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    random.seed(4)
    recreate_database(DB_NAME)
    try:
        print(f"Jobs benchmark: {n} trivial jobs, {WORKERS} workers, ORM broker on PostgreSQL")

        def raw_arm() -> tuple[list[float], float]:
            latencies = timed_enqueues(
                n, lambda i: async_task("operator.add", 1, 2, q_options={"save": False})
            )
            return latencies, drain(with_clock=False)

        # raw, chatter, raw again: the machine's load drifts, so the baseline brackets us.
        raw_enqueue, raw_before = raw_arm()

        priorities = [random.choice(list(PRIORITY_RANK)) for _ in range(n)]
        chatter_enqueue = timed_enqueues(
            n, lambda i: enqueue("echo", args={"i": i}, priority=priorities[i])
        )
        chatter_rate = drain(with_clock=True)
        done = Job.objects.filter(status=JobStatus.SUCCEEDED).count()
        if done != n:
            raise RuntimeError(f"only {done} of {n} jobs succeeded")
        inverted = inversions()
        raw_enqueue_after, raw_after = raw_arm()
        raw_enqueue += raw_enqueue_after
        raw_rate = (raw_before + raw_after) / 2

        def ms(values: list[float], fraction: float) -> float:
            return percentile(values, fraction) * 1000

        print(
            f"  throughput     raw django-q2 {raw_rate:8.1f} tasks/s"
            f"   (before {raw_before:.1f}, after {raw_after:.1f})"
        )
        print(f"                 chatter       {chatter_rate:8.1f} jobs/s")
        print(f"                 ratio         {chatter_rate / raw_rate:8.2f}   (goal >= 0.7)")
        print(f"  inversions     {inverted} in a mixed backlog of {n}   (goal 0)")
        print(
            f"  enqueue p50/p99  raw {ms(raw_enqueue, 0.5):.2f}/{ms(raw_enqueue, 0.99):.2f} ms"
            f"   chatter {ms(chatter_enqueue, 0.5):.2f}/{ms(chatter_enqueue, 0.99):.2f} ms"
            f"   p99 ratio {ms(chatter_enqueue, 0.99) / ms(raw_enqueue, 0.99):.2f}"
        )
        print(
            f"  enqueue mean     raw {statistics.mean(raw_enqueue) * 1000:.2f} ms"
            f"   chatter {statistics.mean(chatter_enqueue) * 1000:.2f} ms"
        )
    finally:
        drop_database(DB_NAME)


if __name__ == "__main__":
    main()
