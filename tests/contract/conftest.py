"""The contract tests' server: uvicorn on the test database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def chatter_server(tmp_path: Path) -> Iterator[str]:
    from django.conf import settings
    from django.db import connection

    port = _free_port()
    env = {
        **os.environ,
        "CHATTER_DATA_DIR": str(settings.DATA_DIR),
        "CHATTER_DB_NAME": connection.settings_dict["NAME"],
        # Hundreds of requests from one key: limits are tested in tests/security.
        "CHATTER_RATE_LIMIT": "1000000/h",
        "CHATTER_RATE_LIMIT_EXPENSIVE": "1000000/h",
        "CHATTER_DEFAULT_MODEL": "local",
        "LOG_LEVEL": "WARNING",
    }
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "chatter_project.asgi:application"),
            *("--host", "127.0.0.1", "--port", str(port), "--no-access-log"),
        ],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # a generous wait for start-up, not a speed claim
        while True:
            try:
                if httpx.get(f"{url}/api/v1/health/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "uvicorn did not come up"
            time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
