"""Export a scope to a file (JSON, CSV zip, XML, Parquet zip, SQL), with a progress bar."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from accounts.models import User
from datamgmt import age
from datamgmt.management.commands._progress import clear_errors, progress_bar, secret_from_env
from datamgmt.models import Compression, ExportFormat, ExportScope
from datamgmt.scopes import export_tables
from datamgmt.services.backups import chatter_version, scrypt_log_n
from datamgmt.services.exports import export_file_name, passphrase_check, tables_write


class Command(BaseCommand):
    help = "Export data as the operator (every scope; the user scope with --user)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--scope", choices=ExportScope.values, required=True)
        parser.add_argument("--format", choices=ExportFormat.values, required=True)
        parser.add_argument("--compression", choices=Compression.values, default="none")
        parser.add_argument("--user", help="user scope: whose data (a username).")
        parser.add_argument("--conversation", help="conversation scope: its id.")
        parser.add_argument("--document", help="document scope: its id.")
        parser.add_argument("--models", nargs="+", help="custom scope: app_label.ModelName ...")
        parser.add_argument(
            "--filters", help='custom scope: JSON {"app.Model": {"field__lookup": value}}.'
        )
        parser.add_argument("--output", help="The file (default: a name in the current directory).")
        parser.add_argument(
            "--passphrase-env",
            metavar="VAR",
            help="Encrypt (age) with this environment variable's passphrase.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        parameters: dict[str, Any] = {"all": True}
        if options["user"]:
            subject = User.objects.filter(username=options["user"]).first()
            if subject is None:
                raise CommandError(f"No user {options['user']}.")
            parameters["user_id"] = subject.pk
        elif options["scope"] == "user":
            raise CommandError("The user scope needs --user.")
        if options["conversation"]:
            parameters["conversation_id"] = options["conversation"]
        if options["document"]:
            parameters["document_id"] = options["document"]
        if options["models"]:
            parameters["models"] = options["models"]
        if options["filters"]:
            try:
                parameters["filters"] = json.loads(options["filters"])
            except ValueError as exc:
                raise CommandError(f"--filters is not JSON: {exc}") from exc
        passphrase = secret_from_env(options["passphrase_env"])
        operator = User(username="manage.py", is_staff=True, is_superuser=True)
        with clear_errors():
            passphrase_check(passphrase)
            tables = export_tables(
                scope=options["scope"],
                parameters=parameters,
                owner=operator,
                for_sql=options["format"] == "sql",
            )
            name = f"{options['scope']}-{timezone.now():%Y%m%dT%H%M%SZ}"
            default = export_file_name(
                name=name,
                fmt=options["format"],
                compression=options["compression"],
                encrypted=bool(passphrase),
            )
            path = Path(options["output"] or default).resolve()
            key = header = None
            if passphrase:
                key, header = age.encryption_prepare(
                    passphrase=passphrase, scrypt_log_n=scrypt_log_n()
                )
            meta = {
                "format": "chatter-export/1",
                "scope": options["scope"],
                "created_at": timezone.now().isoformat(),
                "chatter_version": chatter_version(),
            }
            with progress_bar(self.stderr._out, "row") as report:
                out, counts = tables_write(
                    tables,
                    path=path,
                    fmt=options["format"],
                    compression=options["compression"],
                    meta=meta,
                    file_key=key,
                    header=header,
                    progress=report,
                )
        self.stdout.write(
            self.style.SUCCESS(
                f"Exported {sum(counts.values())} rows of {len(counts)} tables: {out.size} bytes"
            )
        )
        self.stdout.write(str(path))
