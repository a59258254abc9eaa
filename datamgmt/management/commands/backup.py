"""Make a full, incremental or differential backup, with a progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from datamgmt.management.commands._progress import clear_errors, progress_bar, secret_from_env
from datamgmt.services.backups import backup_create, backup_run


class Command(BaseCommand):
    help = "Back up the database (full, incremental since the last backup, differential since the last full)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--type", choices=["full", "incremental", "differential"], default="full"
        )
        parser.add_argument(
            "--output",
            help="Directory for the backup (default: CHATTER_BACKUP_DIR or .chatter/backups).",
        )
        secret = parser.add_mutually_exclusive_group()
        secret.add_argument(
            "--passphrase-env",
            metavar="VAR",
            help="Encrypt with the passphrase in this environment variable.",
        )
        secret.add_argument(
            "--recipient",
            action="append",
            metavar="AGE_PUBLIC_KEY",
            help="Encrypt to an age public key (repeatable).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        with clear_errors():
            backup = backup_create(
                type=options["type"],
                actor=None,
                passphrase=secret_from_env(options["passphrase_env"]),
                recipients=options["recipient"],
                directory=Path(options["output"]).resolve() if options["output"] else None,
            )
            with progress_bar(self.stderr._out, "table") as report:
                backup = backup_run(backup_id=backup.pk, progress=report)
        path = Path(backup.directory) / backup.file_name
        self.stdout.write(
            self.style.SUCCESS(
                f"{backup.type} backup: {path} ({backup.size} bytes, encryption: {backup.encryption})"
            )
        )
        self.stdout.write(str(path))
