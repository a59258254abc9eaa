"""Plugins' background work: hourly discovery of pip-installed plugins and removal of this
machine's unpacked copies of wheels no plugin uses any more."""

from __future__ import annotations

from typing import Any

from jobs.registry import maintenance_step
from plugins.selectors import plugin_unpacked_names
from plugins.services import plugin_discover
from plugins.wheels import unpacked_prune


@maintenance_step("plugins_discover_and_prune", order=80)
def plugins_maintain() -> dict[str, Any]:
    found = plugin_discover()
    removed = unpacked_prune(keep=plugin_unpacked_names())
    return {**{key: len(value) for key, value in found.items()}, "unpacked_removed": removed}
