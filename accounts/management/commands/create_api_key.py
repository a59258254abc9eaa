from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from accounts.services import api_key_create, log_action, user_ensure
from core.errors import ApplicationError


class Command(BaseCommand):
    help = (
        "Create an API key for a user (created if missing); prints the key alone on the last line."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--user", required=True, help="username; created when it does not exist"
        )
        parser.add_argument("--staff", action="store_true", help="make the user staff")
        parser.add_argument("--name", default="cli", help="a label for the key")
        parser.add_argument("--scopes", default="read,write", help="comma-separated: read,write")

    def handle(self, *args: Any, **options: Any) -> None:
        scopes = [s.strip() for s in options["scopes"].split(",") if s.strip()]
        try:
            with transaction.atomic():
                user, created = user_ensure(username=options["user"], staff=options["staff"])
                if created:
                    log_action(
                        actor=None,
                        action="user.created",
                        target=user,
                        details={"via": "create_api_key"},
                    )
                api_key, raw = api_key_create(
                    user=user, name=options["name"], scopes=scopes, actor=None
                )
        except ApplicationError as exc:
            raise CommandError(f"{exc.message} {exc.details}") from exc
        who = f"{'Created user' if created else 'User'} {user.username}"
        staff = " (staff)" if user.is_staff else ""
        self.stderr.write(f"{who}{staff}; key {api_key.prefix}… scopes {','.join(api_key.scopes)}")
        self.stdout.write(raw)
