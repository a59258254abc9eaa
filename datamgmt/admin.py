"""Data management in the admin: exports, backups with their chain and verification,
restores, retention policies with a preview. Thin: actions call services."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.views.decorators.debug import sensitive_post_parameters

from core.admin_base import ReadOnlyModelAdmin
from core.errors import ApplicationError
from datamgmt.models import (
    Backup,
    BackupType,
    Encryption,
    Export,
    Restore,
    RetentionPolicy,
    WorkStatus,
)
from datamgmt.services.backups import backup_chain, backup_request, configured_recipients
from datamgmt.services.exports import exports_expire
from datamgmt.services.restores import backup_files_check, restore_request
from datamgmt.services.retention import policy_preview, policy_purge_request
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


class BackupNowForm(forms.Form):
    """What the API's `POST /api/v1/backups/` takes, as an operator types it: the passphrase
    twice (never rendered back), the configured age recipients offered only when there are
    some."""

    type = forms.ChoiceField(choices=BackupType.choices, initial=BackupType.FULL)
    encryption = forms.ChoiceField(widget=forms.RadioSelect)
    # As the API takes it: exactly as typed, no trimming.
    passphrase = forms.CharField(
        required=False,
        strip=False,
        min_length=8,
        max_length=1024,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="For passphrase encryption: at least 8 characters. It is not stored: "
        "keep it, a restore asks for it.",
    )
    passphrase_again = forms.CharField(
        required=False,
        strip=False,
        max_length=1024,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def __init__(self, *args: Any, recipients: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = [(Encryption.NONE, "None"), (Encryption.PASSPHRASE, "A passphrase (age scrypt)")]
        if recipients:
            choices.append(
                (Encryption.RECIPIENTS, f"The configured age public keys ({len(recipients)})")
            )
        field = self.fields["encryption"]
        field.choices = choices  # type: ignore[attr-defined]
        field.initial = Encryption.RECIPIENTS if recipients else Encryption.NONE

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("encryption") == Encryption.PASSPHRASE:
            if not data.get("passphrase") and "passphrase" not in self.errors:
                self.add_error("passphrase", "Type the passphrase to encrypt with.")
            elif data.get("passphrase") != data.get("passphrase_again"):
                self.add_error("passphrase_again", "The two passphrases do not match.")
        elif data.get("passphrase") or data.get("passphrase_again"):
            self.add_error("passphrase", "A passphrase is only for passphrase encryption.")
        return data


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
    actions = ["check_files", "verify_by_restoring"]

    # --- "Back up now": the API's backup, from a form ---------------------------------------
    def get_urls(self) -> list[Any]:
        return [
            path(
                "backup-now/",
                self.admin_site.admin_view(self.backup_now_view),
                name="datamgmt_backup_backup_now",
            ),
            *super().get_urls(),
        ]

    def has_backup_permission(self, request: HttpRequest) -> bool:
        # The API lets any staff user back up; here they must also see the backups.
        return request.user.is_staff and self.has_view_permission(request)

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        extra_context = {
            **(extra_context or {}),
            "can_back_up": self.has_backup_permission(request),
        }
        return super().changelist_view(request, extra_context)

    @method_decorator(sensitive_post_parameters("passphrase", "passphrase_again"))
    def backup_now_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_backup_permission(request):
            raise PermissionDenied
        recipients = configured_recipients()
        form = BackupNowForm(request.POST or None, recipients=recipients)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            encryption = data["encryption"]
            try:
                backup = backup_request(
                    type=data["type"],
                    actor=request.user,  # type: ignore[arg-type]
                    passphrase=data["passphrase"] if encryption == Encryption.PASSPHRASE else None,
                    # None: the service takes the configured recipients; [] asks for none.
                    recipients=None if encryption == Encryption.RECIPIENTS else [],
                )
            except ApplicationError as exc:
                details = exc.details if isinstance(exc.details, dict) else {}
                form.add_error(next((f for f in details if f in form.fields), None), exc.message)
            else:
                self.message_user(
                    request,
                    format_html(
                        'Backup <a href="{}">{}</a> queued as job {}.',
                        reverse("admin:datamgmt_backup_change", args=[backup.pk]),
                        backup,
                        backup.job_id,
                    ),
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:datamgmt_backup_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Back up now",
            "form": form,
            "recipients": recipients,
        }
        return TemplateResponse(
            request,
            "admin/datamgmt/backup/backup_now.html",
            context,
            status=400 if form.errors else 200,
        )

    @admin.action(description="Check files: hash each file of the chain against its manifest")
    def check_files(self, request: HttpRequest, queryset: QuerySet[Backup]) -> None:
        for backup in queryset:
            try:
                files = backup_files_check(backup=backup)
            except ApplicationError as exc:
                self.message_user(request, f"{backup}: {exc.message}", messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"{backup}: OK, {len(files)} file(s) match their manifests "
                    f"({' -> '.join(files)}).",
                    messages.SUCCESS,
                )

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
            try:
                result = policy_preview(policy=policy)
            except ApplicationError as exc:
                self.message_user(request, f"{policy.name}: {exc.message}", messages.ERROR)
                continue
            self.message_user(
                request,
                f"{policy.name}: would delete {result['total']} rows {json.dumps(result['counts'])}",
            )

    @admin.action(
        description="Purge now (shows what it deletes, asks to confirm, queues a job)",
        permissions=["change"],
    )
    def purge_now(
        self, request: HttpRequest, queryset: QuerySet[RetentionPolicy]
    ) -> HttpResponse | None:
        if request.POST.get("post") != "yes":
            previews = []
            for policy in queryset:
                try:
                    previews.append((policy, policy_preview(policy=policy), ""))
                except ApplicationError as exc:
                    previews.append((policy, None, exc.message))
            context = {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": "Purge now?",
                "previews": previews,
                "queryset": queryset,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "action": "purge_now",
            }
            return TemplateResponse(
                request, "admin/datamgmt/retentionpolicy/purge_confirmation.html", context
            )
        # As the API's confirmed purge: a job per policy (a purge can outlast the request),
        # which runs as this operator and is audited by the service.
        for policy in queryset:
            try:
                job = policy_purge_request(policy=policy, actor=request.user)  # type: ignore[arg-type]
            except ApplicationError as exc:
                self.message_user(request, f"{policy.name}: {exc.message}", messages.ERROR)
                continue
            self.message_user(
                request,
                format_html(
                    '{}: purge queued as job <a href="{}">{}</a>.',
                    policy.name,
                    reverse("admin:jobs_job_change", args=[job.pk]),
                    job.pk,
                ),
                messages.SUCCESS,
            )
        return None
