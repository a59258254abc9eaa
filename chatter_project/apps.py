from __future__ import annotations

from django.apps import AppConfig


class ChatterConfig(AppConfig):
    """The composition root: settings, URLs, the API, `serve`."""

    name = "chatter_project"
    verbose_name = "Chatter"

    def ready(self) -> None:
        # Each registers its system check.
        from web import http_policy, versioning  # noqa: F401
