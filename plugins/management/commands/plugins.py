"""``manage.py plugins list|discover|build SOURCE [--output DIR]``."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from plugins.selectors import plugin_list, plugin_status
from plugins.services import plugin_discover
from plugins.wheels import wheel_build


class Command(BaseCommand):
    help = "List plugins, register pip-installed ones, or build a plugin's wheel offline."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list", help="Installed plugins and their status.")
        sub.add_parser("discover", help="Register pip-installed plugins (disabled).")
        build = sub.add_parser("build", help="Build a py3-none-any wheel from a source tree.")
        build.add_argument("source", type=Path, help="The directory with pyproject.toml.")
        build.add_argument("--output", type=Path, default=Path("."))

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "list":
            plugins = list(plugin_list())
            if not plugins:
                self.stdout.write(
                    "No plugins installed (`plugins discover` registers pip-installed ones; "
                    "the admin's Plugins screen and POST /api/v1/plugins/install/ take a wheel)."
                )
            for plugin in plugins:
                self.stdout.write(
                    f"{plugin.name:24} {plugin.version:10} {plugin.source:12} "
                    f"{plugin_status(plugin):14} errors={plugin.error_count}"
                )
        elif action == "discover":
            found = plugin_discover()
            for key, names in found.items():
                self.stdout.write(f"{key}: {', '.join(names) or '-'}")
        else:
            source: Path = options["source"]
            if not (source / "pyproject.toml").is_file():
                raise CommandError(f"{source} has no pyproject.toml")
            filename, data = wheel_build(source)
            options["output"].mkdir(parents=True, exist_ok=True)
            target = options["output"] / filename
            target.write_bytes(data)
            self.stdout.write(f"{target} sha256={hashlib.sha256(data).hexdigest()}")
