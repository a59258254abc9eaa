"""Webhook deliveries through Chatter's real path against a raw httpx POST loop, same run.

    .venv/bin/python bench/bench_webhooks.py [EVENTS]      (EVENTS per burst, default 500)

Runs in a scratch database (`chatter_bench_webhooks`, dropped afterwards) with a real
django-q2 cluster (`CHATTER_WORKERS`, default 2) and the jobs clock, delivering to a
loopback receiver (a threaded HTTP/1.1 server in this process) on four healthy endpoints:

- **raw**: one httpx client POSTing the same bodies to the receiver in a loop (keep-alive),
  the floor of what a Python sender does on this machine;
- **chatter**: events emitted through the registry (`core.events.alert_raise`, committed in
  batches of 100), dispatched to the four endpoints' deliveries, signed, sent by the delivery
  jobs, every attempt recorded. Throughput: deliveries received per second, first to last,
  of a burst of EVENTS events (x 4 endpoints). Lag: from the event's timestamp (its row's
  creation) to the receiver's arrival, p50 and p99, with events emitted at a steady 25/s
  (100 deliveries/s) for 10 s, after its first second (reported apart: its first events
  may wait for a delivery job to start, the last one having ended after
  CHATTER_WEBHOOK_IDLE_SECONDS of nothing to do);
- **chatter + slow**: the same with a fifth endpoint that never answers within its timeout
  (2 s; the receiver sleeps 5 s), subscribed to the same events. Its figures are the four
  healthy endpoints' only: the slow one must not change them.

The arms run raw, chatter, chatter + slow, chatter, chatter + slow, raw; each figure is the
mean of its two runs (the machine's load drifts).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.support import drop_database, percentile, recreate_database  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatter_project.settings")
os.environ["CHATTER_DB_NAME"] = DB_NAME = "chatter_bench_webhooks"
os.environ["CHATTER_WEBHOOK_ALLOWED_HOSTS"] = "127.0.0.1"

import django  # noqa: E402

django.setup()

from core.embedded_db import embedded_database_ensure  # noqa: E402

embedded_database_ensure()

import httpx  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from accounts.models import User  # noqa: E402
from core.events import alert_raise  # noqa: E402
from webhooks.models import Delivery, Endpoint  # noqa: E402
from webhooks.services import endpoint_create  # noqa: E402

WORKERS = os.environ.get("CHATTER_WORKERS", "2")
HEALTHY = 4
SLOW_SLEEP = 5.0
SLOW_TIMEOUT = 2
PACED_RATE = 25  # events per second in the lag phase
PACED_SECONDS = 10


class Receiver:
    def __init__(self) -> None:
        receiver = self
        self.lock = threading.Lock()
        self.arrivals: list[tuple[str, float, float]] = []  # (path, arrived, event time)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body are two writes: without TCP_NODELAY the body waits for the
            # client's delayed ACK (~40 ms a request on keep-alive connections).
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                arrived = time.time()
                if self.path == "/slow":
                    time.sleep(SLOW_SLEEP)
                else:
                    stamp = json.loads(body).get("timestamp")
                    event_time = (
                        datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
                        if stamp
                        else arrived
                    )
                    with receiver.lock:
                        receiver.arrivals.append((self.path, arrived, event_time))
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False
            request_queue_size = 256

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def reset(self) -> None:
        with self.lock:
            self.arrivals.clear()

    def healthy(self) -> list[tuple[str, float, float]]:
        with self.lock:
            return [a for a in self.arrivals if a[0] != "/slow" and a[0] != "/raw"]


def raw_loop(receiver: Receiver, n: int) -> float:
    """POSTs per second from one keep-alive httpx client, the same body size as a delivery."""
    body = json.dumps(
        {
            "id": "evt_" + "0" * 26,
            "type": "system.alert",
            "timestamp": timezone.now().isoformat(),
            "data": {"level": "warning", "code": "bench", "message": "event 0", "details": {}},
        }
    ).encode()
    with httpx.Client() as client:
        started = time.perf_counter()
        for _ in range(n):
            client.post(receiver.url("/raw"), content=body, headers={"webhook-id": "x"})
        return n / (time.perf_counter() - started)


def wait_received(receiver: Receiver, expected: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    seen, progress_at = 0, time.monotonic()
    while len(receiver.healthy()) < expected:
        now = time.monotonic()
        count = len(receiver.healthy())
        if count != seen:
            seen, progress_at = count, now
        if now > deadline or now - progress_at > 60:
            raise RuntimeError(f"only {count} of {expected} deliveries arrived")
        time.sleep(0.05)


def chatter_arm(receiver: Receiver, user: User, events: int, *, slow: bool) -> dict[str, float]:
    Endpoint.objects.all().delete()
    for n in range(HEALTHY):
        endpoint_create(owner=user, name=f"fast {n}", url=receiver.url(f"/fast/{n}"))
    if slow:
        endpoint_create(owner=user, name="slow", url=receiver.url("/slow"), timeout=SLOW_TIMEOUT)
    receiver.reset()

    # Throughput: a burst of events (committed 100 at a time), every delivery received.
    for start in range(0, events, 100):
        with transaction.atomic():
            for i in range(start, min(start + 100, events)):
                alert_raise(code="bench", message=f"event {i}", owner_id=user.pk, level="warning")
    wait_received(receiver, events * HEALTHY)
    arrived = sorted(a[1] for a in receiver.healthy())
    rate = (len(arrived) - 1) / (arrived[-1] - arrived[0])

    # Lag: events at a steady rate, one per transaction (as the app emits them).
    time.sleep(3)  # let the burst's jobs end
    receiver.reset()
    paced = PACED_RATE * PACED_SECONDS
    began = time.monotonic()
    for i in range(paced):
        alert_raise(code="bench", message=f"paced {i}", owner_id=user.pk, level="warning")
        pause = began + (i + 1) / PACED_RATE - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    wait_received(receiver, paced * HEALTHY)
    # The first second's events may wait for a delivery job to start (the last one ended
    # after CHATTER_WEBHOOK_IDLE_SECONDS of nothing): reported apart, the rest is the
    # steady state.
    warm_from = min(event for _, _, event in receiver.healthy()) + 1.0
    lags = [(a - e) * 1000 for _, a, e in receiver.healthy() if e >= warm_from]
    cold = max((a - e) * 1000 for _, a, e in receiver.healthy() if e < warm_from)
    attempts_slow = (
        Delivery.objects.filter(endpoint__name="slow").exclude(attempt_count=0).count()
        if slow
        else 0
    )
    return {
        "rate": rate,
        "lag_p50": percentile(lags, 0.5),
        "lag_p99": percentile(lags, 0.99),
        "cold_start": cold,
        "slow_attempted": attempts_slow,
    }


def main() -> None:
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    recreate_database(DB_NAME)
    receiver = Receiver()
    try:
        _main(receiver, events)
    finally:
        drop_database(DB_NAME)


def _main(receiver: Receiver, events: int) -> None:
    env = {**os.environ, "CHATTER_WORKERS": WORKERS, "LOG_LEVEL": "WARNING"}
    manage = str(ROOT / "manage.py")
    with tempfile.TemporaryFile("w+") as log:
        run(receiver, events, env, manage, log)


def run(receiver: Receiver, events: int, env: dict[str, str], manage: str, log) -> None:  # type: ignore[no-untyped-def]
    processes = [
        subprocess.Popen(
            [sys.executable, manage, command], env=env, cwd=ROOT, stdout=log, stderr=log
        )
        for command in ("qcluster", "jobs_clock")
    ]
    try:
        user = User.objects.create_user("bench")
        time.sleep(5)  # the cluster's workers start
        print(
            f"Webhooks benchmark: bursts of {events} events x {HEALTHY} endpoints, "
            f"{PACED_RATE} events/s x {PACED_SECONDS} s paced; {WORKERS} workers, "
            f"{settings.CHATTER_WEBHOOK_MAX_JOBS} delivery job(s) at most"
        )
        chatter_arm(receiver, user, 50, slow=False)  # warm-up: workers import what sending needs
        raw = [raw_loop(receiver, events * HEALTHY)]
        runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        for slow in (False, True, False, True):
            runs[slow].append(chatter_arm(receiver, user, events, slow=slow))
            result = runs[slow][-1]
            print(
                f"  {'chatter + slow' if slow else 'chatter       '}  {result['rate']:7.1f} "
                f"deliveries/s  lag p50 {result['lag_p50']:6.1f} ms  p99 {result['lag_p99']:7.1f} ms"
                f"  (first second, a job starting: up to {result['cold_start']:.0f} ms)"
                + (
                    f"  (slow endpoint: {result['slow_attempted']} deliveries tried)"
                    if slow
                    else ""
                )
            )
        raw.append(raw_loop(receiver, events * HEALTHY))
        raw_rate = statistics.mean(raw)

        def mean(slow: bool, key: str) -> float:
            return statistics.mean(run[key] for run in runs[slow])

        print(
            f"  raw httpx loop  {raw_rate:7.1f} POSTs/s   (before {raw[0]:.1f}, after {raw[1]:.1f})"
        )
        for slow in (False, True):
            label = "chatter + slow" if slow else "chatter       "
            print(
                f"  {label}  {mean(slow, 'rate'):7.1f} deliveries/s ({mean(slow, 'rate') / raw_rate:.2f}x raw; "
                f"goal >= 200/s)  lag p50 {mean(slow, 'lag_p50'):.1f} ms  p99 {mean(slow, 'lag_p99'):.1f} ms"
                f"  first second up to {mean(slow, 'cold_start'):.0f} ms"
            )
        print(
            f"  slow endpoint's effect on the healthy ones: throughput "
            f"{mean(True, 'rate') / mean(False, 'rate'):.2f}x, p99 lag "
            f"{mean(True, 'lag_p99') / mean(False, 'lag_p99'):.2f}x"
        )
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        log.seek(0)
        tail = log.read()[-3000:]
        if any(word in tail for word in ("Traceback", "ERROR")):
            print(tail)


if __name__ == "__main__":
    main()
