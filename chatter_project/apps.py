from __future__ import annotations

from django.apps import AppConfig


class ChatterConfig(AppConfig):
    """The composition root: settings, URLs, the API, `serve`."""

    name = "chatter_project"
    verbose_name = "Chatter"

    def ready(self) -> None:
        from agents.specs import register_model_spec_check, register_model_spec_pattern
        from conversations.providers import spec_pattern, validate_spec
        from experiments import rules as experiment_rules
        from web import http_policy, versioning  # noqa: F401  (each registers its system check)

        # agents sits below conversations: the composition root hands it the provider check.
        register_model_spec_check(validate_spec)
        register_model_spec_pattern(spec_pattern)
        # So does experiments, for its variants' models.
        experiment_rules.register_model_spec_check(validate_spec)
        experiment_rules.register_model_spec_pattern(spec_pattern)
