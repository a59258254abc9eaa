"""`make run`: migrate, make sure an operator can get in, then run the web server and the
job workers together in the foreground until Ctrl-C or SIGTERM.

Children run in their own sessions, so a terminal's Ctrl-C reaches only this supervisor,
which then sends each child exactly one SIGTERM (uvicorn treats a second signal as "force
quit") and waits for them. When the supervisor exits it detaches from the embedded
PostgreSQL, which then shuts down cleanly if nothing else is attached.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from django.conf import settings
from django.db import transaction

from accounts.models import User
from accounts.services import api_key_authenticate, api_key_create, log_action
from core.errors import ApplicationError

DEMO_USERNAME = "admin"
STOP_TIMEOUT_SECONDS = 10
# How long the job processes get to exit after their SIGTERM (see Supervisor.shutdown).
GROUP_STOP_GRACE_SECONDS = 3


@dataclass
class DemoCredentials:
    username: str
    password: str
    api_key: str
    fresh: bool


def _credentials_file() -> Path:
    return Path(settings.DATA_DIR) / "demo-credentials.json"


def demo_credentials_ensure() -> DemoCredentials | None:
    """Create the operator account and a key on first start; later starts read them back.

    The key is stored hashed in the database, so the only copy of the raw key and password
    is this 0600 file in the data directory (like the generated SECRET_KEY beside it).
    Returns None when the file's credentials no longer work (changed or revoked on purpose).
    """
    path = _credentials_file()
    if path.exists():
        saved = json.loads(path.read_text())
        user = User.objects.filter(username=saved["username"]).first()
        api_key = api_key_authenticate(saved["api_key"])
        if user is not None and api_key is not None and user.check_password(saved["password"]):
            return DemoCredentials(
                saved["username"], saved["password"], saved["api_key"], fresh=False
            )
        if User.objects.exists():
            return None
    elif User.objects.filter(is_superuser=True).exists():
        return None

    password = secrets.token_urlsafe(12)
    with transaction.atomic():
        user = User.objects.filter(username=DEMO_USERNAME).first() or User(username=DEMO_USERNAME)
        user.is_staff = user.is_superuser = user.is_active = True
        user.set_password(password)
        user.save()
        log_action(actor=None, action="user.created", target=user, details={"via": "make run"})
        _, raw = api_key_create(user=user, name="demo (make run)", actor=None)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"username": DEMO_USERNAME, "password": password, "api_key": raw}, handle)
    return DemoCredentials(DEMO_USERNAME, password, raw, fresh=True)


def active_models() -> tuple[str, str]:
    """The chat model new conversations use and the active embedding space, as configured:
    neither model is loaded (the local embedder loads its weights on first use)."""
    from conversations.providers import default_model_spec
    from knowledge.embeddings import active_embedder

    chat = default_model_spec()
    if chat == "local":
        chat = "local (no model key configured: replies quote the knowledge base)"
    try:
        space = active_embedder().space
    except ApplicationError as exc:
        space = f"misconfigured: {exc.message}"
    return chat, space


def print_banner(out: TextIO, port: int, credentials: DemoCredentials | None) -> None:
    base = f"http://127.0.0.1:{port}"
    database = "embedded PostgreSQL" if settings.EMBEDDED_DATABASE else "DATABASE_URL"
    chat, space = active_models()
    lines = [
        "",
        "Chatter",
        f"  Admin         {base}/admin/",
        f"  API docs      {base}/api/docs/",
        f"  OpenAPI       {base}/api/schema/",
        f"  API           {base}/api/v1/",
        f"  Data dir      {settings.DATA_DIR}",
        f"  Database      {database}",
        f"  Chat model    {chat}",
        f"  Embeddings    {space}",
    ]
    if credentials is not None:
        origin = "created now" if credentials.fresh else f"saved in {_credentials_file()}"
        lines += [
            f"  Operator      {credentials.username} / {credentials.password}   ({origin})",
            f"  API key       {credentials.api_key}",
            f"  Try           curl -H 'Authorization: Bearer {credentials.api_key}' "
            f"{base}/api/v1/whoami/",
        ]
    else:
        lines += [
            "  Operator      the saved demo credentials were changed or revoked;",
            "                make a key with:",
            "                .venv/bin/python manage.py create_api_key --user NAME --staff",
        ]
    out.write("\n".join(lines) + "\n\n")
    out.flush()


class Supervisor:
    """Runs the children, restarts one that dies, and stops them all on SIGTERM or Ctrl-C.

    A child that exits is restarted (its whole process group is killed first: a qcluster
    whose sentinel was SIGKILLed exits and leaves its workers orphaned in that group), unless
    it died ``RESTART_LIMIT`` times within ``RESTART_WINDOW_SECONDS``: then it is broken (a
    port in use, a bad setting) and everything stops with status 1.

    Stopping: the web server gets one SIGTERM (uvicorn treats a second as "force quit"); the
    children in ``GROUP_STOP`` get SIGTERM on their whole process group, so every django-q2
    process hears it at once: idle ones exit at once, a busy worker hands its job back to the
    queue (``jobs.worker.WorkerStopping``), and nothing waits for django-q2's own sequential
    shutdown. Whatever is still alive after ``STOP_TIMEOUT_SECONDS`` is killed; the state is
    in PostgreSQL, so a killed worker's job is re-queued by the jobs clock at the next start.
    """

    RESTART_LIMIT = 5
    RESTART_WINDOW_SECONDS = 60.0
    GROUP_STOP = ("workers", "jobs-clock")

    def __init__(
        self,
        commands: dict[str, list[str]],
        out: TextIO,
        env: dict[str, str] | None = None,
    ) -> None:
        self.commands = commands
        self.out = out
        self.env = env
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: dict[str, list[float]] = {name: [] for name in commands}
        self.stopping = False

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stopping = True

    def start(self, *, handle_signals: bool = True, only: tuple[str, ...] = ()) -> None:
        """Spawn the children (``only`` those named: the rest wait for ``start_rest``)."""
        if handle_signals:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        for name in self.commands:
            if not only or name in only:
                self._spawn(name)

    def start_rest(self) -> list[str]:
        """Spawn every child not started yet; their names."""
        rest = [name for name in self.commands if name not in self.children]
        for name in rest:
            self._spawn(name)
        return rest

    def _spawn(self, name: str) -> None:
        self.children[name] = subprocess.Popen(
            self.commands[name], start_new_session=True, env=self.env
        )

    def wait_until_ready(self, url: str, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping and self.dead_child() is None:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        return False

    def dead_child(self) -> str | None:
        for name, child in self.children.items():
            if child.poll() is not None:
                return name
        return None

    def _kill_group(self, child: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)

    def restart_if_allowed(self, name: str) -> bool:
        """Restart a dead child; False when it keeps dying (the caller then stops)."""
        now = time.monotonic()
        recent = [t for t in self.restarts[name] if now - t < self.RESTART_WINDOW_SECONDS]
        child = self.children[name]
        self._kill_group(child)
        if len(recent) >= self.RESTART_LIMIT:
            self.out.write(
                f"{name} exited with status {child.returncode} "
                f"{len(recent) + 1} times in {self.RESTART_WINDOW_SECONDS:.0f}s; stopping.\n"
            )
            return False
        self.restarts[name] = [*recent, now]
        self.out.write(f"{name} exited with status {child.returncode}; restarting it.\n")
        self.out.flush()
        self._spawn(name)
        return True

    def run_until_stopped(self) -> int:
        exit_code = 0
        while not self.stopping:
            dead = self.dead_child()
            if dead is not None and not self.restart_if_allowed(dead):
                exit_code = 1
                break
            time.sleep(0.2)
        self.shutdown()
        return exit_code

    def shutdown(self) -> None:
        self.out.write("Stopping Chatter...\n")
        self.out.flush()
        for name, child in self.children.items():
            if name in self.GROUP_STOP:
                # Every process of the group (once each), including a dead qcluster's orphans.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, signal.SIGTERM)
            elif child.poll() is None:
                child.send_signal(signal.SIGTERM)
        started = time.monotonic()
        for name, child in self.children.items():
            if name in self.GROUP_STOP:
                self._group_stop(child, started + GROUP_STOP_GRACE_SECONDS)
                continue
            try:
                child.wait(timeout=max(0.1, started + STOP_TIMEOUT_SECONDS - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.out.write(f"{name} did not stop in {STOP_TIMEOUT_SECONDS}s; killing it.\n")
                self._kill_group(child)
                child.wait()
        self.out.write("Stopped.\n")
        self.out.flush()

    def _group_stop(self, child: subprocess.Popen[bytes], deadline: float) -> None:
        """Wait for a SIGTERMed group, then SIGKILL what is left of it.

        A busy worker hands its job back within moments of the SIGTERM; what may be left
        are django-q2 processes waiting on each other (qcluster's main process waits for a
        lock its sentinel held when the signal killed it): nothing of value, all in the
        database, so they are killed rather than waited for."""
        while time.monotonic() < deadline:
            child.poll()
            if not group_alive(child.pid):
                break
            time.sleep(0.05)
        else:
            self._kill_group(child)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)


def metrics_files_clear() -> int:
    """Empty PROMETHEUS_MULTIPROC_DIR before the web and job workers start: each process
    writes its samples to a file named by its pid, and files left by an earlier run would
    be summed into this one's (prometheus-client's multiprocess mode). Returns the count."""
    from django.conf import settings

    removed = 0
    for path in Path(settings.PROMETHEUS_MULTIPROC_DIR).glob("*.db"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def group_alive(pgid: int) -> bool:
    """Whether a process group still has a live (not zombie) member."""
    import psutil

    for process in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                return True
    return False


def child_commands(port: int, host: str, web_workers: int) -> dict[str, list[str]]:
    manage = str(Path(settings.BASE_DIR) / "manage.py")
    return {
        "web": [
            sys.executable,
            "-m",
            "uvicorn",
            "chatter_project.asgi:application",
            "--host",
            host,
            "--port",
            str(port),
            "--workers",
            str(web_workers),
            "--lifespan",
            "off",
            "--no-server-header",
        ],
        "workers": [sys.executable, manage, "qcluster"],
        # Due retries, crashed or hung workers, lost tokens (jobs.clock).
        "jobs-clock": [sys.executable, manage, "jobs_clock"],
    }
