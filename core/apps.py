from __future__ import annotations

from django.apps import AppConfig


class CoreConfig(AppConfig):
    """The kernel's database pieces: the vector extension and the shared cache table."""

    name = "core"
    verbose_name = "Core"
