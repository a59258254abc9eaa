from __future__ import annotations

from django.apps import AppConfig


class ExperimentsConfig(AppConfig):
    """A/B tests of prompts, models, parameters and workflows."""

    name = "experiments"
    verbose_name = "Experiments"

    def ready(self) -> None:
        from experiments import events  # noqa: F401  (experiment.* event types)
