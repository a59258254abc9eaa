"""The embedded PostgreSQL, driven from separate processes as web, workers and commands are."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

SCRIPT = """
import sys, time
from pathlib import Path
import psycopg
from core.embedded_db import embedded_database_start, embedded_server_pid
data_dir, action, linger = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
cfg = embedded_database_start(data_dir)
with psycopg.connect(host=cfg["HOST"], dbname=cfg["NAME"], user="postgres", autocommit=True) as c:
    if action == "write":
        c.execute("CREATE TABLE IF NOT EXISTS kept (x int)")
        c.execute("INSERT INTO kept VALUES (42)")
    if action == "read":
        print("ROWS", c.execute("SELECT x FROM kept").fetchall(), flush=True)
print("PID", embedded_server_pid(data_dir), flush=True)
time.sleep(linger)
"""


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Short path: the server's unix socket lives here when the path allows it.
    with tempfile.TemporaryDirectory(prefix="chx") as path:
        yield Path(path)
        pid_file = Path(path) / "pgdata" / "postmaster.pid"
        if pid_file.exists():  # a failed test must not leave a server behind
            os.kill(int(pid_file.read_text().splitlines()[0]), signal.SIGTERM)
            time.sleep(0.5)


def start(data_dir: Path, action: str = "none", linger: float = 0.0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(data_dir), action, str(linger)],
        cwd=settings.BASE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> dict[str, str]:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.communicate()  # reap it and close its pipes


def read_pid(process: subprocess.Popen[str]) -> int:
    assert process.stdout is not None
    while not (line := process.stdout.readline()).startswith("PID"):
        assert line, "the process ended before attaching"
    return int(line.split()[1])


def server_running(data_dir: Path) -> bool:
    return (data_dir / "pgdata" / "postmaster.pid").exists()


def test_two_processes_starting_at_once_share_one_server(data_dir):
    first, second = start(data_dir, linger=2), start(data_dir, linger=2)

    pids = {finish(first)["PID"], finish(second)["PID"]}

    assert len(pids) == 1 and pids != {"None"}
    assert not server_running(data_dir), "the last process to leave stops the server"


def test_data_survives_a_restart(data_dir):
    finish(start(data_dir, "write"))
    assert not server_running(data_dir)

    assert finish(start(data_dir, "read"))["ROWS"] == "[(42,)]"


def test_a_killed_holder_does_not_keep_the_server_running_forever(data_dir):
    victim = start(data_dir, linger=60)
    read_pid(victim)
    kill(victim)
    assert server_running(data_dir)

    finish(start(data_dir))

    assert not server_running(data_dir)


def test_it_recovers_after_the_postmaster_is_killed(data_dir):
    holder = start(data_dir, "write", linger=60)
    os.kill(read_pid(holder), signal.SIGKILL)  # the postmaster
    kill(holder)

    assert finish(start(data_dir, "read"))["ROWS"] == "[(42,)]"
