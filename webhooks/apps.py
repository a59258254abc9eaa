from __future__ import annotations

from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    """Signed, retried, SSRF-safe webhooks (models arrive with their issue)."""

    name = "webhooks"
    verbose_name = "Webhooks"
