from __future__ import annotations

from django.apps import AppConfig


class JobsConfig(AppConfig):
    """The prioritized job queue on django-q2 (its models arrive with the jobs issue)."""

    name = "jobs"
    verbose_name = "Jobs"
