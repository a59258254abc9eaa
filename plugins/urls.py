"""The path converter of plugins' names in /api/v1/plugins/<name>/..."""

from __future__ import annotations


class PluginNameConverter:
    # plugins.manifest.NAME_PATTERN: a letter first, so a UUID or "install" never matches
    # where a plugin's id would.
    regex = "[a-z][a-z0-9_]{1,48}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value
