from __future__ import annotations

from django.apps import AppConfig


class ExperimentsConfig(AppConfig):
    """A/B tests of prompts, models and workflows (models arrive with their issue)."""

    name = "experiments"
    verbose_name = "Experiments"
