from __future__ import annotations

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Users, hashed scoped API keys, ownership rules and the audit log."""

    name = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        from accounts import schema, signals  # noqa: F401  (audit receivers, schema extension)
