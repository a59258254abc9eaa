"""Plugins' state: what is installed, enabled, granted and configured; the uploaded wheels;
each plugin's own data; the generation every process compares with what it has loaded."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class PluginSource(models.TextChoices):
    UPLOAD = "upload", "Uploaded wheel (stored in the database)"
    ENTRY_POINT = "entry_point", "pip-installed package (chatter.plugins entry point)"


class PluginType(models.TextChoices):
    TOOL = "tool", "Tool"
    WORKFLOW = "workflow", "Workflow"
    INTEGRATION = "integration", "Integration"
    MIDDLEWARE = "middleware", "Middleware"
    HANDLER = "handler", "Handler"
    EXTENSION = "extension", "Extension"


class Plugin(models.Model):
    """One installed plugin: its manifest, the operator's decisions, its health counters."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=50, unique=True)
    version = models.CharField(max_length=64)
    description = models.TextField(blank=True)
    author = models.CharField(max_length=200, blank=True)
    license = models.CharField(max_length=100, blank=True)
    type = models.CharField(max_length=20, choices=PluginType.choices)
    entry_point = models.CharField(max_length=200)
    capabilities = models.JSONField(default=list, blank=True)
    permissions_requested = models.JSONField(default=list, blank=True)
    config_schema = models.JSONField(default=dict, blank=True)
    chatter_versions = models.CharField(max_length=100)
    manifest = models.JSONField(default=dict, blank=True)
    source = models.CharField(max_length=20, choices=PluginSource.choices)
    # The top-level modules its code brings (from the wheel's RECORD): two plugins may not
    # share one, nor shadow a module this installation already has.
    modules = models.JSONField(default=list, blank=True)

    enabled = models.BooleanField(default=False)
    permissions_granted = models.JSONField(default=list, blank=True)
    config = models.JSONField(default=dict, blank=True)
    # Bumped by every change that a process must apply (code, configuration, grants, on/off):
    # a process reloads a plugin whose revision differs from the one it loaded.
    revision = models.PositiveIntegerField(default=1)

    disabled_reason = models.CharField(max_length=500, blank=True)
    auto_disabled_at = models.DateTimeField(null=True, blank=True)
    error_count = models.PositiveBigIntegerField(default=0)
    timeout_count = models.PositiveBigIntegerField(default=0)
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    last_error_point = models.CharField(max_length=50, blank=True)

    installed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    installed_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


class PluginWheel(models.Model):
    """The uploaded wheel of a plugin's current version: every process unpacks it from here."""

    plugin = models.OneToOneField(Plugin, on_delete=models.CASCADE, related_name="wheel")
    filename = models.CharField(max_length=255)
    sha256 = models.CharField(max_length=64)
    size = models.PositiveIntegerField()
    data = models.BinaryField()
    uploaded_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.filename


class PluginData(models.Model):
    """A plugin's own key/value store (``ctx.data_*``); removed with the plugin."""

    plugin = models.ForeignKey(Plugin, on_delete=models.CASCADE, related_name="data")
    key = models.CharField(max_length=200)
    value = models.JSONField(default=None, null=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["plugin", "key"], name="plugins_data_unique_key")
        ]
        verbose_name_plural = "plugin data"

    def __str__(self) -> str:
        return self.key


class PluginState(models.Model):
    """One row: the generation of the plugin state. Every change to what a process must load
    takes a new value from a sequence (never reused, even by a rolled-back change); each
    process compares it with the one it loaded, per request and per job."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    generation = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"generation {self.generation}"
