from __future__ import annotations

from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    """Signed, retried, SSRF-safe webhooks: a subscriber of the kernel's event registry."""

    name = "webhooks"
    verbose_name = "Webhooks"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from core.events import subscriber_register, waker_register
        from webhooks import events  # noqa: F401  (webhook.test)
        from webhooks.models import Endpoint
        from webhooks.services import deliveries_create_for_events, webhooks_wake_for_events
        from webhooks.services.wake import endpoints_changed

        subscriber_register("webhooks", deliveries_create_for_events)
        waker_register("webhooks", webhooks_wake_for_events)
        # The waker's "is any endpoint active?" is read again after this process changes one.
        post_save.connect(endpoints_changed, sender=Endpoint, dispatch_uid="webhooks-wake")
        post_delete.connect(endpoints_changed, sender=Endpoint, dispatch_uid="webhooks-wake-del")
