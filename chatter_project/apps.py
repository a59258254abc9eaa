from __future__ import annotations

from django.apps import AppConfig


class PlatformConfig(AppConfig):
    """Cross-cutting pieces: the vector extension, the shared cache table, `serve`."""

    name = "chatter_project"
    label = "core"
    verbose_name = "Platform"

    def ready(self) -> None:
        # Each registers its system check.
        from chatter_project import http_policy, versioning  # noqa: F401
