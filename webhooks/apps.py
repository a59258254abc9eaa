from __future__ import annotations

from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    """Signed, retried, SSRF-safe webhooks: a subscriber of the kernel's event registry."""

    name = "webhooks"
    verbose_name = "Webhooks"

    def ready(self) -> None:
        from core.events import subscriber_register, waker_register
        from webhooks import events  # noqa: F401  (webhook.test)
        from webhooks.services import deliveries_create_for_events, webhooks_wake_for_events

        subscriber_register("webhooks", deliveries_create_for_events)
        waker_register("webhooks", webhooks_wake_for_events)
