from __future__ import annotations

from django.apps import AppConfig


class PluginsConfig(AppConfig):
    """Plugin registry, manifests, lifecycle and health (see plugins.runtime for the design)."""

    name = "plugins"
    verbose_name = "Plugins"

    def ready(self) -> None:
        from core.events import subscriber_register
        from jobs.registry import job_prelude_register
        from plugins.extensions import events_handle
        from plugins.runtime import plugins_sync_quietly

        # Plugins register into the lower layers' registries; nothing imports plugins.
        subscriber_register("plugins", events_handle)
        # Each job first brings this worker's plugins (their handlers) up to date.
        job_prelude_register("plugins_sync", plugins_sync_quietly)
