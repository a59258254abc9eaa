from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


def default_max_in_flight() -> int:
    return int(settings.CHATTER_WEBHOOK_MAX_IN_FLIGHT)


class Endpoint(models.Model):
    """Where a user's events are POSTed, signed with its secret (Standard Webhooks)."""

    class Scope(models.TextChoices):
        OWN = "own", "The owner's events"
        ALL = "all", "Every user's events (staff only)"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    name = models.CharField(max_length=200)
    url = models.CharField(max_length=2048)
    # The event types it receives; empty: every type (those registered later included).
    events = models.JSONField(default=list, blank=True)
    headers = models.JSONField(default=dict, blank=True, help_text="Sent with every delivery.")
    timeout_seconds = models.PositiveSmallIntegerField(default=15)
    scope = models.CharField(max_length=3, choices=Scope.choices, default=Scope.OWN)
    max_in_flight = models.PositiveSmallIntegerField(
        default=default_max_in_flight,
        help_text="Deliveries sent to it at once, at most: a slow endpoint holds no more.",
    )
    # Whole secrets ("whsec_..."): signing needs them. Shown once, at creation and rotation.
    secret = models.CharField(max_length=100, editable=False)
    previous_secret = models.CharField(max_length=100, blank=True, editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    secret_rotated_at = models.DateTimeField(null=True, blank=True, editable=False)

    is_active = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=500, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    # The first failure since the last success: failing for CHATTER_WEBHOOK_DISABLE_AFTER_SECONDS
    # (5 days) disables the endpoint.
    failing_since = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="webhooks_endpoint_owner_idx")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.url})"

    def signing_secrets(self, now: object = None) -> list[str]:
        """The secrets a delivery is signed with now: the current one, and the previous one
        while its overlap lasts."""
        now = now or timezone.now()
        if (
            self.previous_secret
            and self.previous_secret_expires_at
            and (
                self.previous_secret_expires_at > now  # type: ignore[operator]
            )
        ):
            return [self.secret, self.previous_secret]
        return [self.secret]


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"  # waits for next_attempt_at
    SENDING = "sending", "Sending"  # claimed by a worker until lease_until
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"  # every attempt failed, a 410, or its endpoint was disabled


class Delivery(models.Model):
    """One event for one endpoint: its attempts, until one succeeds or the schedule ends."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="deliveries")
    event = models.ForeignKey("core.Event", on_delete=models.CASCADE, related_name="+")
    event_type = models.CharField(max_length=100)  # the event's, for filters without a join
    status = models.CharField(
        max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempt_count = models.PositiveIntegerField(default=0)
    # Where in the retry schedule the next attempt is (a redelivery starts it over).
    retry_step = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # A worker sending it holds it until then; past it, the clock takes it back.
    lease_until = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    is_test = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "deliveries"
        constraints = [
            # The dispatcher may hand an event over again (at least once): one delivery each.
            models.UniqueConstraint(fields=["endpoint", "event"], name="webhooks_one_per_event")
        ]
        indexes = [
            # The claim: an endpoint's due deliveries, oldest first.
            models.Index(
                fields=["endpoint", "next_attempt_at"],
                name="webhooks_delivery_due_idx",
                condition=Q(status="pending"),
            ),
            # "Is anything due?" (the clock), over every endpoint.
            models.Index(
                fields=["next_attempt_at"],
                name="webhooks_delivery_pending_idx",
                condition=Q(status="pending"),
            ),
            # An endpoint's deliveries in flight (its concurrency) and expired leases.
            models.Index(
                fields=["endpoint", "lease_until"],
                name="webhooks_delivery_sending_idx",
                condition=Q(status="sending"),
            ),
            models.Index(fields=["endpoint", "-created_at"], name="webhooks_delivery_list_idx"),
            models.Index(fields=["created_at"], name="webhooks_delivery_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} -> {self.endpoint_id} ({self.status})"


class DeliveryAttempt(models.Model):
    """One POST of a delivery, as it happened (never changed afterwards)."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(default=0)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    succeeded = models.BooleanField(default=False)
    response_excerpt = models.TextField(blank=True)
    error = models.TextField(blank=True)
    address = models.CharField(max_length=64, blank=True, help_text="The address connected to.")
    webhook_timestamp = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["delivery", "number", "id"]
        indexes = [models.Index(fields=["delivery", "number"], name="webhooks_attempt_idx")]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.delivery_id}"
