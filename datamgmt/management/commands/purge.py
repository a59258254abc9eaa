"""Apply every retention policy now (or show what it would delete), and expire exports."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from datamgmt.management.commands._progress import clear_errors, progress_bar
from datamgmt.services.exports import exports_expire
from datamgmt.services.retention import retention_purge_all


class Command(BaseCommand):
    help = "Purge what the retention policies cover (all of them, auto-purge or not)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Only count what would be deleted."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        with clear_errors(), progress_bar(self.stderr._out, "row") as report:
            result = retention_purge_all(
                auto_only=False, dry_run=options["dry_run"], progress=report
            )
            if not options["dry_run"]:
                result["exports"] = exports_expire()
        for name, outcome in result["policies"].items():
            verb = "would delete" if options["dry_run"] else "deleted"
            self.stdout.write(
                f"{name}: {verb} {outcome['total']} rows {json.dumps(outcome['counts'])}"
            )
        if not result["policies"]:
            self.stdout.write("No retention policies.")
