"""PostgreSQL goes away and comes back: `ready/` and the API answer 503 in the error
envelope (not after a pool's 30 s wait, not a 500), and recover on their own.

A Chatter process (``outage_client.py``) reaches the test database through a TCP relay
this test controls: closing the relay is a database that refuses connections. Durations
are not asserted here (bench/ is the place for them); every wait is a generous deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from accounts.services import api_key_create

pytestmark = pytest.mark.django_db(transaction=True)


class Relay:
    """TCP on 127.0.0.1 → the embedded server's Unix socket; ``down()`` closes the port and
    cuts every relayed connection, ``up()`` opens the same port again."""

    def __init__(self, unix_path: str) -> None:
        self.unix_path = unix_path
        self.port = 0
        self.listener: socket.socket | None = None
        self.open_sockets: list[socket.socket] = []
        self.lock = threading.Lock()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        if self.listener is not None:
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)
            self.listener.close()
            self.listener = None
        with self.lock:
            for sock in self.open_sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.open_sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by down()
            server = socket.socket(socket.AF_UNIX)
            try:
                server.connect(self.unix_path)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.open_sockets += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def relay() -> Iterator[Relay]:
    from django.db import connection

    host = connection.settings_dict["HOST"]
    port = connection.settings_dict["PORT"] or "5432"
    relay = Relay(os.path.join(host, f".s.PGSQL.{port}"))
    relay.up()
    yield relay
    relay.down()


class ChatterProcess:
    def __init__(self, relay: Relay) -> None:
        from django.conf import settings
        from django.db import connection

        name = connection.settings_dict["NAME"]
        env = {
            **os.environ,
            "CHATTER_DATA_DIR": str(settings.DATA_DIR),
            "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{relay.port}/{name}",
            "DB_POOL_MIN": "1",
            "LOG_LEVEL": "CRITICAL",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.platform.outage_client"],
            cwd=settings.BASE_DIR,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self._line() == "ready"

    def _line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, "the Chatter process died"
        return line.strip()

    def get(self, path: str, key: str = "") -> dict:
        assert self.process.stdin is not None
        self.process.stdin.write(f"GET {path} {key}\n")
        self.process.stdin.flush()
        return json.loads(self._line())

    def until(self, path: str, key: str, status: int, deadline: float = 120) -> dict:
        """Ask until the answer has this status (a generous deadline, not a speed claim)."""
        give_up = time.monotonic() + deadline
        while True:
            answer = self.get(path, key)
            if answer["status"] == status or time.monotonic() > give_up:
                return answer
            time.sleep(0.5)

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def test_with_the_database_down_ready_and_the_api_answer_503_then_recover(relay, user):
    _, key = api_key_create(user=user, name="outage")
    chatter = ChatterProcess(relay)
    try:
        assert chatter.get("/api/v1/ready/")["status"] == 200
        assert chatter.get("/api/v1/conversations/", key)["status"] == 200

        relay.down()
        ready = chatter.get("/api/v1/ready/")
        api = chatter.get("/api/v1/conversations/", key)
        whoami = chatter.get("/api/v1/whoami/", key)  # Ninja

        assert ready["status"] == 503
        assert ready["body"]["error"]["code"] == "not_ready"
        checks = ready["body"]["error"]["details"]["checks"]
        assert checks["database"]["ok"] is False
        assert checks["queue"] == {
            "ok": False,
            "latency_ms": 0.0,
            "error": "not run: the database is down",
        }
        for answer in (api, whoami):
            assert answer["status"] == 503, answer
            assert answer["body"]["error"]["code"] in (
                "rate_limiter_unavailable",  # the first thing to touch the database
                "database_unavailable",
            )

        relay.up()
        assert chatter.until("/api/v1/ready/", "", 200)["status"] == 200
        assert chatter.until("/api/v1/conversations/", key, 200)["status"] == 200
        assert chatter.until("/api/v1/whoami/", key, 200)["body"]["key_prefix"] == key[:12]
    finally:
        chatter.close()


def test_a_database_error_inside_a_view_is_a_503_not_a_500(api_client, monkeypatch):
    from django.db import OperationalError

    def unreachable(*args, **kwargs):
        raise OperationalError("connection to server failed: Connection refused")

    monkeypatch.setattr("accounts.api.api_key_list", unreachable)

    response = api_client.get("/api/v1/api-keys/")

    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.json()["error"]["code"] == "database_unavailable"
