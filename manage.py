#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

from __future__ import annotations

import os
import sys

# Commands that never open a database connection: they do not start the embedded one.
NO_DATABASE_COMMANDS = {"help", "--help", "-h", "version", "--version"}


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatter_project.settings")
    from django.core.management import execute_from_command_line

    if sys.argv[1:2] and sys.argv[1] not in NO_DATABASE_COMMANDS:
        from core.embedded_db import embedded_database_ensure

        embedded_database_ensure()
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
