"""The contract tests' schemathesis run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from accounts.services import api_key_create

MAX_EXAMPLES = int(os.environ.get("CHATTER_CONTRACT_MAX_EXAMPLES", "4"))
SEED = 20261202


def schemathesis_run(url: str, user, tmp_path: Path, *, phases: str, options: list[str]) -> None:
    """`schemathesis run --checks all` over /api/schema/ as ``user``: the given phases, bounded
    examples, a fixed seed and deterministic generation, so a failure reproduces with the
    command it prints."""
    _, raw = api_key_create(user=user, name="schemathesis")
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(Path(__file__).with_name("schemathesis.toml")),
        "run",
        f"{url}/api/schema/",
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
        phases,
        *options,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--generation-deterministic",
        # Strings a client can send: without a codec the generator makes lone surrogates, and
        # two that happen to be adjacent reach the server as one astral character, so a
        # string it counted as 101 long (a "maxLength violation") is a valid 100 there.
        "--generation-codec",
        "utf-8",
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
    output = tmp_path / f"schemathesis-{phases.replace(',', '-')}.txt"
    output.write_text(result.stdout + result.stderr)
    if os.environ.get("CHATTER_CONTRACT_OUTPUT"):  # the whole report, for reading at leisure
        Path(os.environ["CHATTER_CONTRACT_OUTPUT"]).write_text(output.read_text())
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-3000:]
