"""Reads for plugins: the list, one plugin, the state generation, health."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import F, QuerySet

from core.errors import NotFound
from plugins.manifest import config_masked
from plugins.models import Plugin, PluginState


def state_generation() -> int:
    """The plugin state's generation (one primary-key read; 0 before any change)."""
    value = PluginState.objects.filter(pk=1).values_list("generation", flat=True).first()
    return int(value or 0)


def _with_wheel(queryset: QuerySet[Plugin]) -> QuerySet[Plugin]:
    return queryset.annotate(wheel_sha256=F("wheel__sha256"))


def plugins_enabled() -> list[Plugin]:
    return list(_with_wheel(Plugin.objects.filter(enabled=True)))


def plugin_with_wheel(plugin_id: Any) -> Plugin:
    return _with_wheel(Plugin.objects.filter(pk=plugin_id)).get()


def plugin_list() -> QuerySet[Plugin]:
    return Plugin.objects.select_related("installed_by").order_by("name")


def plugin_get(*, plugin_id: Any) -> Plugin:
    plugin = plugin_list().filter(pk=plugin_id).first()
    if plugin is None:
        raise NotFound("Plugin not found.")
    return plugin


def plugin_config_masked(plugin: Plugin) -> Any:
    """Its configuration as the admin and the API show it: secrets masked."""
    return config_masked(plugin.config_schema, plugin.config)


def plugin_status(plugin: Plugin) -> str:
    """disabled, auto_disabled, failing (errors in a row, below the threshold) or ok."""
    if not plugin.enabled:
        return "auto_disabled" if plugin.auto_disabled_at else "disabled"
    if plugin.consecutive_failures:
        return "failing"
    return "ok"


def plugin_health(plugin: Plugin) -> dict[str, Any]:
    """A plugin's health as this process sees it: its counters, whether it is loaded here,
    and the result of its own check (run now, within CHATTER_PLUGIN_HEALTH_BUDGET; a
    failing check is counted like any failure)."""
    from plugins.context import PluginFailed
    from plugins.runtime import loaded_plugin, plugin_call

    status = plugin_status(plugin)
    loaded = loaded_plugin(plugin.name) if plugin.enabled else None
    check: dict[str, Any] | None = None
    if plugin.enabled and loaded is None:
        status = "not_loaded"
    elif loaded is not None and loaded.health_check is not None:
        try:
            details = plugin_call(
                loaded,
                "health",
                loaded.health_check,
                loaded.context(),
                threaded=True,
                budget=settings.CHATTER_PLUGIN_HEALTH_BUDGET,
            )
            check = {"ok": True, "details": details if isinstance(details, dict) else {}}
        except PluginFailed as exc:
            check = {"ok": False, "error": exc.message}
            status = "failing"
        plugin.refresh_from_db()  # the check's own failure (or success) is counted now
    return {
        "id": str(plugin.pk),
        "name": plugin.name,
        "version": plugin.version,
        "enabled": plugin.enabled,
        "status": status,
        "loaded": loaded is not None,
        "check": check,
        "error_count": plugin.error_count,
        "timeout_count": plugin.timeout_count,
        "consecutive_failures": plugin.consecutive_failures,
        "last_error": plugin.last_error,
        "last_error_point": plugin.last_error_point,
        "last_error_at": plugin.last_error_at,
        "disabled_reason": plugin.disabled_reason,
    }


def plugins_health() -> dict[str, Any]:
    from plugins.runtime import loaded_generation

    plugins = [plugin_health(plugin) for plugin in plugin_list()]
    healthy = all(p["status"] in ("ok", "disabled") for p in plugins)
    return {
        "status": "ok" if healthy else "degraded",
        "generation": loaded_generation(),
        "plugins": plugins,
    }


def plugin_unpacked_names() -> set[str]:
    """The directory names of the unpacked wheels installed plugins use."""
    from plugins.models import PluginWheel

    return {
        f"{name}-{sha[:16]}"
        for name, sha in PluginWheel.objects.values_list("plugin__name", "sha256")
    }
