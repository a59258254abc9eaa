from __future__ import annotations

import os
import sys
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from chatter_project.launcher import (
    Supervisor,
    child_commands,
    demo_credentials_ensure,
    print_banner,
)
from jobs.services import maintenance_schedule_ensure


class Command(BaseCommand):
    help = "Migrate, ensure the operator account, then run the web server and job workers."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument(
            "--web-workers", type=int, default=int(os.environ.get("WEB_WORKERS", "2"))
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write("Applying migrations...")
        call_command("migrate", interactive=False, verbosity=0)
        credentials = demo_credentials_ensure()
        maintenance_schedule_ensure()
        supervisor = Supervisor(
            child_commands(options["port"], options["host"], options["web_workers"]), self.stdout
        )
        supervisor.start()
        ready_url = f"http://127.0.0.1:{options['port']}/api/v1/ready/"
        if supervisor.wait_until_ready(ready_url):
            print_banner(self.stdout, options["port"], credentials)
            self.stdout.write("Chatter is up. Press Ctrl-C to stop.\n")
        elif not supervisor.stopping:
            self.stderr.write(f"Chatter did not become ready at {ready_url}.\n")
            supervisor.shutdown()
            sys.exit(1)
        sys.exit(supervisor.run_until_stopped())
