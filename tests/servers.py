"""A real uvicorn server of Chatter on the test database, for the tests that need one (streams
over a socket, the contract run, the OpenAI-compatible API, a worker's start-up). It sees
what the tests commit, so they run with transaction=True."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def uvicorn_server(
    *,
    database: str,
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
    wait: bool = True,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """(base URL, process) of a server on ``database`` with ``env`` over this process's; its
    output goes to ``log_path`` (shown if it dies while starting). With ``wait``, it answers
    /api/v1/health/ before this yields; stopped with SIGTERM afterwards."""
    from django.conf import settings

    port = free_port()
    command = [
        *(sys.executable, "-m", "uvicorn", "chatter_project.asgi:application"),
        *("--host", "127.0.0.1", "--port", str(port), "--lifespan", "off", "--no-access-log"),
    ]
    environment = {
        **os.environ,
        "CHATTER_DATA_DIR": str(settings.DATA_DIR),
        "CHATTER_DB_NAME": database,
        **(env or {}),
    }
    log = log_path.open("w") if log_path else None
    process = subprocess.Popen(
        command,
        cwd=settings.BASE_DIR,
        env=environment,
        stdout=log or subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # a generous wait for start-up, not a speed claim
        while wait:
            try:
                if httpx.get(f"{base}/api/v1/health/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            output = log_path.read_text()[-3000:] if log_path else "(no log kept)"
            assert process.poll() is None, output
            assert time.monotonic() < deadline, "uvicorn did not come up"
            time.sleep(0.2)
        yield base, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log:
            log.close()
