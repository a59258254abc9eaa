"""A loopback receiver (a real HTTP server in a thread) and helpers to run deliveries."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from accounts.models import User
from core.events import events_undispatched
from webhooks.delivery import deliveries_due, deliveries_run, events_pump
from webhooks.models import Delivery, DeliveryStatus, Endpoint
from webhooks.services import endpoint_create


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # names lowercased
    body: bytes  # exactly the bytes that came over the wire
    at: float  # time.time() when it arrived


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as receivers behind a real server do
    # Headers and body are two writes: without TCP_NODELAY the body waits for the client's
    # delayed ACK (~40 ms a request on keep-alive connections).
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        receiver: Receiver = self.server.receiver  # type: ignore[attr-defined]
        received = Received(
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            at=time.time(),
        )
        reply = receiver.take(received)
        if reply.delay:
            time.sleep(reply.delay)
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:  # the client gave up waiting (a timeout test)
            pass

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a reply still sleeping must not hold the test's teardown


class Receiver:
    """Records every request; answers by ``replies`` (in order, for each path) and then
    ``default``, or by ``decide(received) -> Reply`` when set."""

    def __init__(self) -> None:
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.receiver = self  # type: ignore[attr-defined]
        self.port = self.server.server_address[1]
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.replies: dict[str, list[Reply]] = {}
        self.default = Reply()
        self.decide: Callable[[Received], Reply] | None = None
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, *replies: Reply) -> None:
        self.replies[path] = list(replies)

    def take(self, received: Received) -> Reply:
        with self.lock:
            self.received.append(received)
            if self.decide is not None:
                return self.decide(received)
            queue = self.replies.get(received.path)
            return queue.pop(0) if queue else self.default

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def _delivery_loops_end_when_idle(settings) -> None:
    """In-process delivery loops return as soon as nothing is due (no linger)."""
    settings.CHATTER_WEBHOOK_IDLE_SECONDS = 0


@pytest.fixture
def receiver(settings) -> Iterator[Receiver]:
    settings.CHATTER_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    running = Receiver()
    yield running
    running.close()


@pytest.fixture
def fast_retries(settings) -> list[float]:
    """A retry schedule of tenths of a second (same length as the real one)."""
    settings.CHATTER_WEBHOOK_RETRY_SCHEDULE = [0, 0.05, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    settings.CHATTER_WEBHOOK_RETRY_JITTER = 0.1
    return settings.CHATTER_WEBHOOK_RETRY_SCHEDULE


def deliver_once() -> None:
    """One pass: dispatch waiting events, send what is due (no waiting for retries)."""
    events_pump()
    deliveries_run(seconds=2)


def deliver_until_settled(*, timeout: float = 20, concurrency: int | None = None) -> None:
    """Run the delivery loop (in this process) until no delivery is pending or sending."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events_pump()
        if deliveries_due():
            deliveries_run(seconds=2, concurrency=concurrency)
        if (
            not events_undispatched()
            and not Delivery.objects.filter(
                status__in=[DeliveryStatus.PENDING, DeliveryStatus.SENDING],
                endpoint__is_active=True,
            ).exists()
        ):
            return
        time.sleep(0.02)
    raise AssertionError("deliveries did not settle")


@pytest.fixture
def make_endpoint(receiver: Receiver) -> Callable[..., Endpoint]:
    def make(owner: User, path: str = "/hook", **fields: object) -> Endpoint:
        fields.setdefault("name", f"hook {path}")
        return endpoint_create(owner=owner, url=receiver.url(path), **fields)  # type: ignore[arg-type]

    return make
