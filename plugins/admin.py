"""Plugins in the admin: a status column, installing a wheel, actions that enable and
disable, a change form for the configuration (secrets masked) and the grants; deleting
uninstalls. All through the services, so every change is audited and reaches every process."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html

from core.errors import ApplicationError
from plugins.manifest import PERMISSIONS
from plugins.models import Plugin
from plugins.selectors import plugin_config_masked, plugin_status
from plugins.services import (
    plugin_configure,
    plugin_disable,
    plugin_discover,
    plugin_enable,
    plugin_grant,
    plugin_install,
    plugin_uninstall,
)

STATUS_COLOURS = {
    "ok": "#2e7d32",
    "failing": "#ef6c00",
    "auto_disabled": "#c62828",
    "disabled": "#757575",
}


class InstallForm(forms.ModelForm):
    wheel = forms.FileField(help_text="A pure-Python wheel (.whl): a new plugin, or an update.")
    sha256 = forms.CharField(
        max_length=64,
        min_length=64,
        required=False,
        help_text="The wheel's SHA-256 as published with it (left empty: the uploaded "
        "file's own, i.e. no integrity check beyond the wheel's RECORD).",
    )

    class Meta:
        model = Plugin
        fields: list[str] = []


class ChangeForm(forms.ModelForm):
    config_json = forms.CharField(
        label="Configuration",
        widget=forms.Textarea(attrs={"rows": 8, "cols": 80}),
        required=False,
        help_text="JSON, checked against the plugin's schema. Secrets show as ********: "
        "leave them so to keep them.",
    )
    grants = forms.MultipleChoiceField(
        label="Permissions granted",
        choices=[],
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )

    class Meta:
        model = Plugin
        fields: list[str] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        plugin = self.instance
        self.fields["grants"].choices = [
            (name, f"{name}: {PERMISSIONS.get(name, '')}")
            for name in plugin.permissions_requested or []
        ]
        self.initial["grants"] = plugin.permissions_granted
        self.initial["config_json"] = json.dumps(plugin_config_masked(plugin), indent=2)

    def clean_config_json(self) -> Any:
        text = self.cleaned_data.get("config_json") or "{}"
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise forms.ValidationError(f"Not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise forms.ValidationError("A JSON object, please.")
        return value


@admin.register(Plugin)
class PluginAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "version",
        "type",
        "source",
        "status_column",
        "error_count",
        "timeout_count",
        "consecutive_failures",
        "last_error_at",
        "disabled_reason",
    ]
    list_filter = ["enabled", "type", "source"]
    search_fields = ["name", "description", "author"]
    list_select_related = ["installed_by"]
    actions = ["enable", "disable"]
    readonly_fields = [
        "id",
        "name",
        "version",
        "description",
        "author",
        "license",
        "type",
        "source",
        "entry_point",
        "capabilities",
        "permissions_requested",
        "permissions_granted",
        "chatter_versions",
        "config_schema",
        "enabled",
        "status_column",
        "disabled_reason",
        "auto_disabled_at",
        "error_count",
        "timeout_count",
        "consecutive_failures",
        "last_error_point",
        "last_error",
        "last_error_at",
        "installed_by",
        "installed_at",
        "updated_at",
    ]

    @admin.display(description="status", ordering="enabled")
    def status_column(self, plugin: Plugin) -> str:
        status = plugin_status(plugin)
        return format_html('<b style="color:{}">{}</b>', STATUS_COLOURS.get(status, "#000"), status)

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        found = plugin_discover(actor=request.user)  # type: ignore[arg-type]
        if found["added"] or found["updated"]:
            self.message_user(
                request,
                f"pip-installed plugins: added {found['added']}, updated {found['updated']}.",
            )
        for refusal in found["refused"]:
            self.message_user(request, refusal, level=messages.WARNING)
        return super().changelist_view(request, extra_context)

    def get_form(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        kwargs["form"] = InstallForm if obj is None else ChangeForm
        kwargs["fields"] = ["wheel", "sha256"] if obj is None else ["config_json", "grants"]
        return super().get_form(request, obj, **kwargs)

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return [(None, {"fields": ["wheel", "sha256"]})]
        readonly = self.get_readonly_fields(request, obj)
        return [(None, {"fields": ["config_json", "grants"]}), ("Plugin", {"fields": readonly})]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [] if obj is None else self.readonly_fields

    def _install(self, request: HttpRequest, form: InstallForm) -> Plugin:
        upload = form.cleaned_data["wheel"]
        data = upload.read()
        plugin, _ = plugin_install(
            actor=request.user,  # type: ignore[arg-type]
            filename=upload.name,
            data=data,
            sha256=form.cleaned_data.get("sha256") or hashlib.sha256(data).hexdigest(),
            request=request,
        )
        return plugin

    def save_form(self, request: HttpRequest, form: Any, change: bool) -> Any:
        try:
            if not change:
                return self._install(request, form)
            plugin = form.instance
            config = form.cleaned_data["config_json"]
            if config != plugin_config_masked(plugin):
                plugin = plugin_configure(
                    plugin=plugin,
                    actor=request.user,  # type: ignore[arg-type]
                    config=config,
                    request=request,
                )
            grants = sorted(form.cleaned_data.get("grants") or [])
            if grants != sorted(plugin.permissions_granted):
                plugin = plugin_grant(
                    plugin=plugin,
                    actor=request.user,  # type: ignore[arg-type]
                    permissions=grants,
                    request=request,
                )
            return plugin
        except ApplicationError as exc:
            form.add_error(None, f"{exc.message} {exc.details or ''}".strip())
            raise _FormInvalid(form) from exc

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        return None  # save_form called the services

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        return None

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: Any = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except _FormInvalid as invalid:
            self.message_user(request, "; ".join(invalid.messages()), level=messages.ERROR)
            from django.shortcuts import redirect

            return redirect(request.get_full_path())

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        return None  # the audit log has it (plugin.installed)

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        return None

    def delete_model(self, request: HttpRequest, obj: Plugin) -> None:
        plugin_uninstall(plugin=obj, actor=request.user, request=request)  # type: ignore[arg-type]

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Plugin]) -> None:
        for plugin in queryset:
            self.delete_model(request, plugin)

    @admin.action(description="Enable (with the permissions granted now)")
    def enable(self, request: HttpRequest, queryset: QuerySet[Plugin]) -> None:
        done = 0
        for plugin in queryset:
            try:
                plugin_enable(plugin=plugin, actor=request.user, request=request)  # type: ignore[arg-type]
                done += 1
            except ApplicationError as exc:
                self.message_user(request, f"{plugin.name}: {exc.message}", level=messages.ERROR)
        self.message_user(request, f"{done} plugin(s) enabled.")

    @admin.action(description="Disable")
    def disable(self, request: HttpRequest, queryset: QuerySet[Plugin]) -> None:
        for plugin in queryset:
            plugin_disable(plugin=plugin, actor=request.user, request=request)  # type: ignore[arg-type]
        self.message_user(request, f"{queryset.count()} plugin(s) disabled.")


class _FormInvalid(Exception):
    def __init__(self, form: Any) -> None:
        super().__init__("form invalid")
        self.form = form

    def messages(self) -> list[str]:
        return [str(e) for e in self.form.non_field_errors()]
