from __future__ import annotations

from django.apps import AppConfig


class DatamgmtConfig(AppConfig):
    """Exports, backups, restores and retention (models arrive with their issue)."""

    name = "datamgmt"
    verbose_name = "Data management"
