"""Plugins' health: their counters and their own checks, run now (a failing check is
counted like any failure, hence a service rather than a selector)."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from plugins.models import Plugin
from plugins.selectors import plugin_list, plugin_status


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
