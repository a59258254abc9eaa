"""`schemathesis run --checks all` against the real server: the OpenAPI document at
/api/schema/ (both versions, DRF and Ninja merged) must describe what the API really accepts
and answers (no 500s, declared status codes, bodies, content types and headers; auth and
use-after-free; a request the schema allows is accepted and one it forbids refused).
uvicorn serves the test database; the CLI runs every phase (examples,
coverage, fuzzing, stateful) with bounded examples, a fixed seed and deterministic
generation, so a failure reproduces with the command it prints."""

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

from accounts.services import api_key_create

# The server is another process: it must see committed rows (the user and its key).
pytestmark = pytest.mark.django_db(transaction=True)

MAX_EXAMPLES = int(os.environ.get("CHATTER_CONTRACT_MAX_EXAMPLES", "4"))
SEED = 20261202


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


def test_the_api_keeps_every_promise_of_its_schema(chatter_server, make_user, tmp_path):
    user = make_user("contract")
    _, raw = api_key_create(user=user, name="schemathesis")
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(Path(__file__).with_name("schemathesis.toml")),
        "run",
        f"{chatter_server}/api/schema/",
        "--checks",
        "all",
        # A generation-speed warning (long patterned strings), not a finding about the API.
        "--suppress-health-check",
        "too_slow",
        # `all` includes a 10 s response-time limit; the first search loads the embedding
        # model. Tests assert no durations (bench/ measures them): the limit is only the
        # request timeout, a hang detector.
        "--max-response-time",
        "60",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--generation-deterministic",
        "--header",
        f"Authorization: Bearer {raw}",
        "--workers",
        "1",
        "--request-timeout",
        "60",
        # Revoking its own key would turn the rest of the run into 401s; revocation has its
        # own tests (tests/accounts, tests/security/test_authorization_matrix.py).
        "--exclude-path-regex",
        r"/api-keys/\{id\}/revoke/$",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path / "report"),
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=tmp_path,  # its own .schemathesis/ cache stays out of the checkout
        env={**os.environ, "NO_COLOR": "1"},
    )
    output = tmp_path / "schemathesis.txt"
    output.write_text(result.stdout + result.stderr)
    if os.environ.get("CHATTER_CONTRACT_OUTPUT"):  # the whole report, for reading at leisure
        Path(os.environ["CHATTER_CONTRACT_OUTPUT"]).write_text(output.read_text())
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-3000:]
