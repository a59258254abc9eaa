"""Data management in the admin: exports, backups with their chain and verification,
restores, retention policies with a preview. Thin: actions call services."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from core.admin_base import ReadOnlyModelAdmin
from core.errors import ApplicationError
from datamgmt.models import Backup, Encryption, Export, Restore, RetentionPolicy, WorkStatus
from datamgmt.services.backups import backup_chain
from datamgmt.services.exports import exports_expire
from datamgmt.services.restores import restore_request
from datamgmt.services.retention import policy_preview, policy_purge
from datamgmt.services.retention_policies import policy_create, policy_update


def _pretty(data: Any) -> str:
    return format_html(
        "<pre style='white-space: pre-wrap'>{}</pre>", json.dumps(data, indent=2, sort_keys=True)
    )


@admin.register(Export)
class ExportAdmin(ReadOnlyModelAdmin):
    list_display = [
        "id",
        "owner",
        "scope",
        "format",
        "compression",
        "encrypted",
        "status",
        "size",
        "created_at",
        "expires_at",
    ]
    list_filter = ["status", "scope", "format", "encrypted"]
    list_select_related = ["owner"]
    search_fields = ["id", "owner__username", "file_name"]
    exclude = ["encryption_header", "pending_key"]
    actions = ["expire_due"]

    @admin.action(description="Delete the files of expired exports now")
    def expire_due(self, request: HttpRequest, queryset: QuerySet[Export]) -> None:
        result = exports_expire()
        self.message_user(request, f"{result['expired']} export(s) expired.", messages.SUCCESS)


@admin.register(Backup)
class BackupAdmin(ReadOnlyModelAdmin):
    list_display = [
        "created_at",
        "type",
        "status",
        "encryption",
        "parent_link",
        "chain_length",
        "size",
        "verification",
        "verified_at",
    ]
    list_filter = ["type", "status", "encryption", "verification"]
    search_fields = ["id", "file_name"]
    exclude = ["encryption_header", "pending_key", "manifest"]
    readonly_fields = ["chain_display", "tables_display"]
    actions = ["verify_by_restoring"]

    @admin.display(description="parent")
    def parent_link(self, backup: Backup) -> str:
        if backup.parent_id is None:
            return "-"
        return format_html(
            '<a href="../backup/{}/change/">{}</a>', backup.parent_id, str(backup.parent_id)[:8]
        )

    @admin.display(description="chain")
    def chain_length(self, backup: Backup) -> int:
        return len(backup.manifest.get("chain", [])) + 1 if backup.manifest else 0

    @admin.display(description="restore chain (full first)")
    def chain_display(self, backup: Backup) -> str:
        return format_html_join(
            "",
            "<div>{} · {} · {} · {}</div>",
            (
                (
                    b.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                    b.type,
                    b.file_name or b.status,
                    b.verification,
                )
                for b in backup_chain(backup=backup)
            ),
        )

    @admin.display(description="tables (rows, checksum)")
    def tables_display(self, backup: Backup) -> str:
        return _pretty(
            {"tables": backup.manifest.get("tables"), "changes": backup.manifest.get("changes")}
        )

    @admin.action(
        description="Verify: restore the chain into a scratch database, compare checksums, drop it"
    )
    def verify_by_restoring(self, request: HttpRequest, queryset: QuerySet[Backup]) -> None:
        queued = 0
        for backup in queryset:
            if backup.status != WorkStatus.SUCCEEDED or backup.encryption != Encryption.NONE:
                self.message_user(
                    request,
                    f"{backup}: only finished, unencrypted backups are verified here (use `manage.py restore`).",
                    messages.WARNING,
                )
                continue
            try:
                restore_request(backup=backup, actor=request.user, verify_only=True)  # type: ignore[arg-type]
            except ApplicationError as exc:
                self.message_user(request, f"{backup}: {exc.message}", messages.ERROR)
                continue
            queued += 1
        if queued:
            self.message_user(
                request, f"{queued} verification restore(s) queued.", messages.SUCCESS
            )


@admin.register(Restore)
class RestoreAdmin(ReadOnlyModelAdmin):
    list_display = ["created_at", "backup", "target_database", "status", "finished_at"]
    list_filter = ["status"]
    exclude = ["pending_key"]


@admin.register(RetentionPolicy)
class RetentionPolicyAdmin(admin.ModelAdmin):
    list_display = ["name", "scope", "age_days", "auto_purge", "last_run_at", "last_total"]
    list_filter = ["scope", "auto_purge"]
    readonly_fields = ["preview_counts", "last_run_at", "last_result"]
    actions = ["preview", "purge_now"]

    @admin.display(description="last purge")
    def last_total(self, policy: RetentionPolicy) -> Any:
        return (policy.last_result or {}).get("total", "-")

    @admin.display(description="preview (dry run, now)")
    def preview_counts(self, policy: RetentionPolicy) -> str:
        if policy.pk is None:
            return "-"
        try:
            return _pretty(policy_preview(policy=policy)["counts"])
        except ApplicationError as exc:
            return exc.message

    def save_model(
        self, request: HttpRequest, obj: RetentionPolicy, form: Any, change: bool
    ) -> None:
        fields = {
            name: form.cleaned_data[name]
            for name in ("name", "scope", "age_days", "filters", "auto_purge")
        }
        try:
            if change:
                policy_update(policy=obj, actor=request.user, **fields)  # type: ignore[arg-type]
            else:
                obj.pk = policy_create(actor=request.user, **fields).pk  # type: ignore[arg-type]
        except ApplicationError as exc:
            self.message_user(request, exc.message, messages.ERROR)

    @admin.action(description="Preview: count what a purge would delete")
    def preview(self, request: HttpRequest, queryset: QuerySet[RetentionPolicy]) -> None:
        for policy in queryset:
            result = policy_preview(policy=policy)
            self.message_user(
                request,
                f"{policy.name}: would delete {result['total']} rows {json.dumps(result['counts'])}",
            )

    @admin.action(description="Purge now")
    def purge_now(self, request: HttpRequest, queryset: QuerySet[RetentionPolicy]) -> None:
        for policy in queryset:
            result = policy_purge(policy=policy, actor=request.user)  # type: ignore[arg-type]
            self.message_user(
                request,
                f"{policy.name}: deleted {result['total']} rows {json.dumps(result['counts'])}",
                messages.SUCCESS,
            )
