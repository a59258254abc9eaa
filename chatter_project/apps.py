from __future__ import annotations

from django.apps import AppConfig


class ChatterConfig(AppConfig):
    """The composition root: settings, URLs, the API, `serve`."""

    name = "chatter_project"
    verbose_name = "Chatter"

    def ready(self) -> None:
        from web import versioning  # noqa: F401  (registers its system check)
