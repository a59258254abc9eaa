from __future__ import annotations

import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser
from django.db import connection, connections
from django.db.migrations.executor import MigrationExecutor

from chatter_project.launcher import (
    DemoCredentials,
    Supervisor,
    child_commands,
    demo_credentials_ensure,
    metrics_files_clear,
    print_banner,
)
from jobs.services import maintenance_schedule_ensure

READY_TIMEOUT_SECONDS = 300


def migrations_pending() -> int:
    """How many migrations `migrate` would apply (0 on every start after the first)."""
    executor = MigrationExecutor(connection)
    return len(executor.migration_plan(executor.loader.graph.leaf_nodes()))


def seconds_since_process_start() -> float | None:
    """From /proc (10 ms resolution; psutil's create_time rounds the boot time to a second)."""
    try:
        stat = Path("/proc/self/stat").read_text()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except OSError:
        return None
    # Field 22 (starttime, in clock ticks since boot) counted after the parenthesised name.
    start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def operator_setup() -> DemoCredentials | None:
    """The steps the children do not depend on; they run while the children import."""
    try:
        credentials = demo_credentials_ensure()
        maintenance_schedule_ensure()
        return credentials
    finally:
        connections.close_all()  # this thread's connections go back to the pool


class Command(BaseCommand):
    help = "Migrate, ensure the operator account, then run the web server and job workers."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument(
            "--web-workers", type=int, default=int(os.environ.get("WEB_WORKERS", "2"))
        )

    def step(self, message: str, started: float) -> None:
        self.stdout.write(f"  {message} ({time.monotonic() - started:.1f} s)")
        self.stdout.flush()

    def handle(self, *args: Any, **options: Any) -> None:
        # manage.py has already imported Django and the apps and started (or attached to)
        # the embedded PostgreSQL: say how long that took, then time each step after it.
        loaded = seconds_since_process_start() or 0.0
        self.stdout.write(f"Starting Chatter: Django and the database loaded ({loaded:.1f} s)")
        began = time.monotonic()

        started = time.monotonic()
        pending = migrations_pending()
        if pending:
            from django.db import connection

            first = "django_migrations" not in connection.introspection.table_names()
            why = " (the first start creates every table)" if first else ""
            self.stdout.write(f"  Applying {pending} migration{'s' * (pending != 1)}{why}...")
            self.stdout.flush()
            call_command("migrate", interactive=False, verbosity=0)
            self.step(f"Applied {pending} migrations", started)
        else:
            # `migrate` with nothing to apply still loads every app's migrations and runs the
            # post_migrate handlers (content types, permissions): skip it.
            self.step("Database schema up to date", started)

        # The web server, the job workers and the clock each import Django and the apps in
        # their own process: start them now and make the operator account meanwhile.
        started = time.monotonic()
        metrics_files_clear()
        commands = child_commands(options["port"], options["host"], options["web_workers"])
        supervisor = Supervisor(commands, self.stdout)
        # The web server first: on two cores, job workers importing beside it would double
        # the time to the first answer. They start the moment it answers (jobs wait in
        # PostgreSQL meanwhile).
        self.stdout.write(f"  Starting the web server ({options['web_workers']} workers)...")
        self.stdout.flush()
        supervisor.start(only=("web",))
        with ThreadPoolExecutor(max_workers=1) as pool:
            setup: Future[DemoCredentials | None] = pool.submit(operator_setup)
            ready_url = f"http://127.0.0.1:{options['port']}/api/v1/ready/"
            # Generous: on a busy machine the children's imports take several times longer.
            ready = supervisor.wait_until_ready(ready_url, timeout=READY_TIMEOUT_SECONDS)
            try:
                credentials = setup.result()
            except BaseException:
                supervisor.shutdown()  # the children run in their own sessions: stop them
                raise
        if ready:
            self.step("Web server answering", started)
            self.stdout.write(f"  Starting {', '.join(supervisor.start_rest())}")
            self.stdout.write(f"  Up in {time.monotonic() - began + loaded:.1f} s")
            print_banner(self.stdout, options["port"], credentials)
            self.stdout.write("Chatter is up. Press Ctrl-C to stop.\n")
        elif not supervisor.stopping:
            self.stderr.write(f"Chatter did not become ready at {ready_url}.\n")
            supervisor.shutdown()
            sys.exit(1)
        sys.exit(supervisor.run_until_stopped())
