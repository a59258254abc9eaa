"""Exports, backups and their chains, restores, retention policies.

Why and how: README.md, "Data management".
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class ExportScope(models.TextChoices):
    USER = "user", "Everything a user owns"
    CONVERSATION = "conversation", "One conversation"
    DOCUMENT = "document", "One document"
    ANALYTICS = "analytics", "Usage analytics"
    FULL = "full", "Every table (staff)"
    CUSTOM = "custom", "Chosen models and filters"


class ExportFormat(models.TextChoices):
    JSON = "json", "JSON"
    CSV = "csv", "CSV (zip, one file a table)"
    XML = "xml", "XML"
    PARQUET = "parquet", "Parquet (zip, one file a table)"
    SQL = "sql", "SQL (INSERTs)"


class Compression(models.TextChoices):
    NONE = "none", "None"
    GZIP = "gzip", "gzip"
    ZSTD = "zstd", "zstd"


class WorkStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"


class Export(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="exports"
    )
    scope = models.CharField(max_length=20, choices=ExportScope.choices)
    # What the scope names: {"user_id"}, {"conversation_id"}, {"document_id"}, {"models",
    # "filters"} (custom), {"days"} (analytics).
    parameters = models.JSONField(default=dict, blank=True)
    format = models.CharField(max_length=10, choices=ExportFormat.choices)
    compression = models.CharField(
        max_length=10, choices=Compression.choices, default=Compression.NONE
    )
    encrypted = models.BooleanField(default=False)
    # The age header (its passphrase stanza and MAC) and file key, made at request time from
    # the passphrase, which is never stored; the key is wiped once the job has run. (The
    # key opens only this export, whose content is the database's own.)
    encryption_header = models.BinaryField(null=True, blank=True, editable=False)
    pending_key = models.BinaryField(null=True, blank=True, editable=False)
    status = models.CharField(max_length=10, choices=WorkStatus.choices, default="pending")
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL)
    file_name = models.CharField(max_length=200, blank=True)
    size = models.PositiveBigIntegerField(null=True, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    row_counts = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"], name="datamgmt_export_owner")]

    def __str__(self) -> str:
        return f"{self.scope} {self.format} export {str(self.id)[:8]}"


class BackupType(models.TextChoices):
    FULL = "full", "Full"
    INCREMENTAL = "incremental", "Incremental (since the last backup)"
    DIFFERENTIAL = "differential", "Differential (since the last full)"


class Encryption(models.TextChoices):
    NONE = "none", "None"
    PASSPHRASE = "passphrase", "Passphrase (age scrypt)"
    RECIPIENTS = "recipients", "Age public keys"


class Verification(models.TextChoices):
    UNVERIFIED = "unverified"
    VERIFIED = "verified"
    FAILED = "failed"


class Backup(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    type = models.CharField(max_length=15, choices=BackupType.choices)
    # Incremental: the last backup of any type; differential: the last full.
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    status = models.CharField(max_length=10, choices=WorkStatus.choices, default="pending")
    encryption = models.CharField(max_length=12, choices=Encryption.choices, default="none")
    encryption_header = models.BinaryField(null=True, blank=True, editable=False)
    pending_key = models.BinaryField(null=True, blank=True, editable=False)
    directory = models.CharField(max_length=500, blank=True)
    file_name = models.CharField(max_length=200, blank=True)
    size = models.PositiveBigIntegerField(null=True, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    # The snapshot the backup read (pg_snapshot text): what it holds is exactly the
    # transactions visible in it. The next incremental holds those visible in its own and
    # not in this one.
    snapshot = models.TextField(blank=True)
    schema_version = models.CharField(max_length=64, blank=True)
    manifest = models.JSONField(default=dict, blank=True)
    verification = models.CharField(
        max_length=10, choices=Verification.choices, default=Verification.UNVERIFIED
    )
    verification_message = models.TextField(blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.type} backup {self.created_at:%Y-%m-%d %H:%M:%S}"


class Restore(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    backup = models.ForeignKey(Backup, on_delete=models.PROTECT, related_name="restores")
    chain = models.JSONField(default=list, blank=True)
    target_database = models.CharField(max_length=63)
    status = models.CharField(max_length=10, choices=WorkStatus.choices, default="pending")
    pending_key = models.BinaryField(null=True, blank=True, editable=False)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"restore into {self.target_database}"


class RetentionPolicy(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200, unique=True)
    # A key of datamgmt.retention.TARGETS (conversations, documents, jobs, audit_logs, ...).
    scope = models.CharField(max_length=40)
    age_days = models.PositiveIntegerField()
    filters = models.JSONField(default=dict, blank=True)
    auto_purge = models.BooleanField(default=False)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_result = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "retention policies"

    def __str__(self) -> str:
        return self.name
