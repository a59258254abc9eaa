from __future__ import annotations

from django.apps import AppConfig


class CoreConfig(AppConfig):
    """The kernel's database pieces: the vector extension, the shared cache table and the
    event outbox (core.events)."""

    name = "core"
    verbose_name = "Core"

    def ready(self) -> None:
        from core import events  # noqa: F401  (the kernel's own event type, system.alert)
