"""Writes for plugins: the lifecycle (lifecycle.py) and the failure counters (failures.py)."""

from __future__ import annotations

from plugins.services.failures import plugin_failure_record, plugin_success_record
from plugins.services.health import plugin_health, plugins_health
from plugins.services.lifecycle import (
    plugin_configure,
    plugin_disable,
    plugin_discover,
    plugin_enable,
    plugin_grant,
    plugin_install,
    plugin_uninstall,
    state_bump,
)

__all__ = [
    "plugin_configure",
    "plugin_disable",
    "plugin_discover",
    "plugin_enable",
    "plugin_failure_record",
    "plugin_grant",
    "plugin_health",
    "plugin_install",
    "plugin_success_record",
    "plugin_uninstall",
    "plugins_health",
    "state_bump",
]
