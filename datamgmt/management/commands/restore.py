"""Restore the backup chain that ends in FILE into an empty database, and verify it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from datamgmt import age, pg
from datamgmt.management.commands._progress import clear_errors, progress_bar, secret_from_env
from datamgmt.services.restores import chain_restore


class Command(BaseCommand):
    help = "Restore the chain ending in FILE (full, then its incrementals/differential) into an empty database."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file")
        secret = parser.add_mutually_exclusive_group()
        secret.add_argument(
            "--passphrase-env",
            metavar="VAR",
            help="The passphrase, from this environment variable.",
        )
        secret.add_argument(
            "--identity", metavar="FILE", help="An age identity file (age-keygen's output)."
        )
        parser.add_argument(
            "--database",
            metavar="NAME",
            help="Create this database on the same server and restore into it (default: the configured database, which must be empty).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        identities = None
        if options["identity"]:
            try:
                identities = age.identities_read(Path(options["identity"]).read_text())
            except (OSError, ValueError) as exc:
                raise CommandError(f"Cannot read the identity file: {exc}") from exc
        passphrase = secret_from_env(options["passphrase_env"])
        created = None
        target = pg.django_conninfo()
        if options["database"]:
            server = pg.django_conninfo(dbname="postgres")
            try:
                pg.database_create(server, options["database"])
            except pg.DatabaseToolError as exc:
                raise CommandError(str(exc)) from exc
            created = (server, options["database"])
            target = pg.django_conninfo(dbname=options["database"])
        with clear_errors(), progress_bar(self.stderr._out, "step") as report:
            try:
                result = chain_restore(
                    Path(options["file"]).resolve(),
                    target_info=target,
                    created_database=created,
                    passphrases=[passphrase] if passphrase else None,
                    identities=identities,
                    progress=report,
                )
            except BaseException:
                if created is not None:
                    pg.database_drop(*created)
                raise
        self.stdout.write(
            self.style.SUCCESS(
                f"Restored {' -> '.join(result['chain'])}: {result['tables']} tables, {result['rows']} rows, checksums verified."
            )
        )
