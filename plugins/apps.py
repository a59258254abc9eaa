from __future__ import annotations

from django.apps import AppConfig


class PluginsConfig(AppConfig):
    """Plugin registry, manifests, lifecycle and health (models arrive with their issue)."""

    name = "plugins"
    verbose_name = "Plugins"
