from __future__ import annotations

from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The operator console: the admin's dashboard, its chat page, Prometheus `/metrics`."""

    default = True
    name = "console"
    verbose_name = "Operator console"
