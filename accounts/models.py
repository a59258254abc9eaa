from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.validators import RegexValidator
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone


class User(AbstractUser):
    """Chatter's user: Django's, swappable from day one so later fields need no data surgery."""

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"

    def save(self, *args: object, **kwargs: object) -> None:
        # The user.registered / user.updated event (accounts.signals, on post_save) is
        # written in the save's own transaction: a save that rolls back emits nothing.
        with transaction.atomic():
            super().save(*args, **kwargs)  # type: ignore[arg-type]


# django-ratelimit's rate syntax: a count, a slash, an optional multiplier and s/m/h/d.
RATE_PATTERN = r"^[1-9][0-9]{0,8}/[1-9]?[0-9]{0,3}[smhd]$"


class ApiKeyScope(models.TextChoices):
    READ = "read", "Read (safe methods)"
    WRITE = "write", "Write (create, change, delete)"


DEFAULT_SCOPES = [ApiKeyScope.READ.value, ApiKeyScope.WRITE.value]


def default_scopes() -> list[str]:
    return list(DEFAULT_SCOPES)


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def active(self) -> ApiKeyQuerySet:
        now = timezone.now()
        return self.filter(revoked_at__isnull=True).filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=now)
        )


class ApiKey(models.Model):
    """A bearer key. Only its SHA-256 is stored; the key itself is shown once at creation."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100)
    # The visible start of the key ("chk_AbC123xy"), so operators can tell keys apart.
    prefix = models.CharField(max_length=16, db_index=True, editable=False)
    # Keys are 192-bit random secrets, so a fast hash is enough: there is nothing to brute-force.
    hashed_key = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(default=default_scopes)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    # Empty: the deployment's limits (settings.CHATTER_RATE_LIMITS) apply to this key.
    rate_limit = models.CharField(
        max_length=20,
        blank=True,
        validators=[RegexValidator(RATE_PATTERN, "A rate like 600/m, 100/10s or 5000/h.")],
        help_text="Requests this key may make on ordinary routes, e.g. 600/m. Empty: the default.",
    )
    expensive_rate_limit = models.CharField(
        max_length=20,
        blank=True,
        validators=[RegexValidator(RATE_PATTERN, "A rate like 30/m, 10/10s or 500/h.")],
        help_text="Requests on expensive routes (message send, streams, uploads, search), "
        "e.g. 30/m. Empty: the default.",
    )

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > timezone.now()

    def has_scope(self, scope: str) -> bool:
        return scope in (self.scopes or [])


class AuditLog(models.Model):
    """Security-relevant actions, written by the service that performs them."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="audit_entries",
    )
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=200, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "audit log entry"
        verbose_name_plural = "audit log"

    def __str__(self) -> str:
        return f"{self.action} {self.target_repr}".strip()


class SecurityCounter(models.Model):
    """Per-day counts of security events (threats flagged/refused, rate limits hit).

    Incremented with one upsert, so counts from many workers add up exactly.
    """

    event = models.CharField(max_length=64)
    day = models.DateField()
    count = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-day", "event"]
        constraints = [
            models.UniqueConstraint(fields=["event", "day"], name="security_counter_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.event} {self.day}: {self.count}"
