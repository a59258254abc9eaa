from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import ApiKey, ApiKeyScope, AuditLog, SecurityCounter, User
from accounts.services import api_key_create, api_key_revoke
from core.admin_base import ReadOnlyModelAdmin


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    """Apps that track usage extend this (conversations adds tokens and cost)."""

    list_display = [
        "username",
        "email",
        "is_staff",
        "is_active",
        "key_count",
        "last_login",
        "date_joined",
    ]
    list_filter = ["is_staff", "is_superuser", "is_active"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[User]:
        # A correlated subquery, not a join: subclasses add aggregates over other relations,
        # and joins to two relations would multiply rows.
        keys = (
            ApiKey.objects.filter(user=OuterRef("pk"), revoked_at__isnull=True)
            .values("user")
            .annotate(n=Count("pk"))
            .values("n")
        )
        return super().get_queryset(request).annotate(_key_count=Coalesce(Subquery(keys), 0))

    @admin.display(description="active keys", ordering="_key_count")
    def key_count(self, obj: Any) -> int:
        return obj._key_count


class ApiKeyStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "Active"), ("revoked", "Revoked"), ("expired", "Expired")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> QuerySet[ApiKey]:
        now = timezone.now()
        if self.value() == "active":
            return queryset.active()  # type: ignore[attr-defined]
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        if self.value() == "expired":
            return queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
        return queryset


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=ApiKeyScope.choices,
        widget=forms.CheckboxSelectMultiple,
        initial=[ApiKeyScope.READ, ApiKeyScope.WRITE],
    )

    class Meta:
        model = ApiKey
        fields = ["user", "name", "scopes", "expires_at", "rate_limit", "expensive_rate_limit"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = [
        "name",
        "prefix",
        "user",
        "scope_list",
        "status",
        "expires_at",
        "rate_limit",
        "last_used_at",
        "created_at",
    ]
    list_filter = [ApiKeyStatusFilter, "user__is_staff"]
    list_select_related = ["user"]
    search_fields = ["name", "prefix", "user__username"]
    readonly_fields = ["prefix", "revoked_at", "last_used_at", "created_at"]
    autocomplete_fields = ["user"]
    actions = ["revoke_keys"]
    date_hierarchy = "created_at"

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        # A key's owner and scopes are fixed once issued: revoke and issue a new one instead.
        if obj is not None:
            return [*self.readonly_fields, "user", "scopes"]
        return self.readonly_fields

    @admin.display(description="scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes)

    @admin.display(description="status")
    def status(self, obj: ApiKey) -> str:
        if obj.revoked_at:
            return "revoked"
        return "active" if obj.is_active else "expired"

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        api_key, raw = api_key_create(
            user=form.cleaned_data["user"],
            name=form.cleaned_data["name"],
            scopes=form.cleaned_data["scopes"],
            expires_at=form.cleaned_data.get("expires_at"),
            rate_limit=form.cleaned_data.get("rate_limit", ""),
            expensive_rate_limit=form.cleaned_data.get("expensive_rate_limit", ""),
            actor=request.user,  # type: ignore[arg-type]
            request=request,
        )
        obj.pk = api_key.pk
        obj._state.adding = False
        self.message_user(
            request,
            f"API key created. Copy it now, it will not be shown again: {raw}",
            level=messages.WARNING,
        )

    @admin.action(description="Revoke selected API keys")
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        count = 0
        for api_key in queryset.filter(revoked_at__isnull=True):
            api_key_revoke(api_key=api_key, actor=request.user, request=request)  # type: ignore[arg-type]
            count += 1
        self.message_user(request, f"Revoked {count} API key(s).", level=messages.SUCCESS)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoke instead: the audit trail keeps pointing at the key


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyModelAdmin):
    list_display = ["created_at", "action", "actor", "target_repr", "ip_address", "request_id"]
    list_filter = ["action", "target_type"]
    list_select_related = ["actor"]
    search_fields = ["action", "target_repr", "target_id", "actor__username", "request_id"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in AuditLog._meta.fields]


@admin.register(SecurityCounter)
class SecurityCounterAdmin(ReadOnlyModelAdmin):
    """Threats flagged and refused, rate limits hit: per day, across every worker."""

    allow_delete = True
    list_display = ["day", "event", "count", "updated_at"]
    list_filter = ["event"]
    search_fields = ["event"]
    date_hierarchy = "day"
    readonly_fields = ["event", "day", "count", "updated_at"]
