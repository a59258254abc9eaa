"""Webhooks in the admin: endpoints with their health (failures, failing since, disabled and
why), actions that test, redeliver, rotate, enable and disable through the services; the
deliveries with every attempt, read-only; the event outbox, read-only."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html

from core.admin_base import ReadOnlyModelAdmin
from core.errors import ApplicationError
from core.models import Event
from webhooks.models import Delivery, DeliveryAttempt, DeliveryStatus, Endpoint
from webhooks.services import (
    deliveries_redeliver_failed,
    delivery_redeliver,
    endpoint_create,
    endpoint_fields_check,
    endpoint_rotate_secret,
    endpoint_test,
    endpoint_update,
    subscribable_event_types,
)


def _form_errors(form: forms.ModelForm, exc: ApplicationError) -> None:
    details = exc.details if isinstance(exc.details, dict) else {}
    if not details:
        form.add_error(None, exc.message)
    for field, problems in details.items():
        target = {"timeout": "timeout_seconds"}.get(field, field)
        texts = problems if isinstance(problems, list) else [str(problems)]
        form.add_error(target if target in form.fields else None, [str(t) for t in texts])


class EndpointForm(forms.ModelForm):
    events = forms.MultipleChoiceField(
        choices=[],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every event type.",
    )

    class Meta:
        model = Endpoint
        fields = [
            "owner",
            "name",
            "url",
            "events",
            "headers",
            "timeout_seconds",
            "scope",
            "max_in_flight",
            "is_active",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["events"].choices = [(name, name) for name in subscribable_event_types()]
        if not self.instance._state.adding:
            self.fields["owner"].disabled = True

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        owner = cleaned.get("owner") or getattr(self.instance, "owner", None)
        if owner is None:
            return cleaned
        fields = {
            "name": cleaned.get("name", ""),
            "url": cleaned.get("url", ""),
            "events": cleaned.get("events") or [],
            "headers": cleaned.get("headers") or {},
            "timeout": cleaned.get("timeout_seconds"),
            "scope": cleaned.get("scope"),
            "max_in_flight": cleaned.get("max_in_flight"),
        }
        try:
            endpoint_fields_check(fields, owner)
        except ApplicationError as exc:
            _form_errors(self, exc)
        return cleaned


class HealthFilter(admin.SimpleListFilter):
    title = "health"
    parameter_name = "health"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("healthy", "Healthy"), ("failing", "Failing"), ("disabled", "Disabled")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> QuerySet[Endpoint]:
        if self.value() == "healthy":
            return queryset.filter(is_active=True, failing_since__isnull=True)
        if self.value() == "failing":
            return queryset.filter(is_active=True, failing_since__isnull=False)
        if self.value() == "disabled":
            return queryset.filter(is_active=False)
        return queryset


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    form = EndpointForm
    list_display = [
        "name",
        "owner",
        "url",
        "health",
        "consecutive_failures",
        "failing_since",
        "last_success_at",
        "failed_deliveries",
        "disabled_reason",
    ]
    list_filter = [HealthFilter, "scope"]
    list_select_related = ["owner"]
    search_fields = ["name", "url", "owner__username"]
    readonly_fields = [
        "id",
        "disabled_reason",
        "disabled_at",
        "consecutive_failures",
        "failing_since",
        "last_success_at",
        "last_failure_at",
        "secret_rotated_at",
        "previous_secret_expires_at",
        "deliveries_link",
        "created_at",
        "updated_at",
    ]
    actions = ["send_test", "redeliver_failed", "rotate_secret", "enable", "disable"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Endpoint]:
        return (
            super()
            .get_queryset(request)
            .annotate(failed_count=Count("deliveries", filter=Q(deliveries__status="failed")))
        )

    @admin.display(description="health", ordering="is_active")
    def health(self, endpoint: Endpoint) -> str:
        if not endpoint.is_active:
            return "disabled"
        if endpoint.failing_since is not None:
            return f"failing ({endpoint.consecutive_failures} in a row)"
        return "healthy"

    @admin.display(description="failed deliveries", ordering="failed_count")
    def failed_deliveries(self, endpoint: Endpoint) -> int:
        return getattr(endpoint, "failed_count", 0)

    @admin.display(description="deliveries")
    def deliveries_link(self, endpoint: Endpoint) -> str:
        url = reverse("admin:webhooks_delivery_changelist") + f"?endpoint__id__exact={endpoint.pk}"
        return format_html('<a href="{}">Deliveries of this endpoint</a>', url)

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        # The owner's notice: what Chatter disabled and why, until someone enables it again.
        disabled = Endpoint.objects.filter(is_active=False).exclude(
            disabled_reason__startswith="Disabled by "
        )
        for endpoint in disabled.select_related("owner")[:10]:
            self.message_user(
                request,
                f"Webhook endpoint {endpoint.name!r} of {endpoint.owner.username} was disabled "
                f"on {endpoint.disabled_at:%Y-%m-%d %H:%M} UTC: {endpoint.disabled_reason} "
                "Enable it once fixed, then redeliver its failed deliveries.",
                messages.WARNING,
            )
        return super().changelist_view(request, extra_context)

    def save_model(self, request: HttpRequest, obj: Endpoint, form: Any, change: bool) -> None:
        data = form.cleaned_data
        fields = {
            "name": data["name"],
            "url": data["url"],
            "events": data.get("events") or [],
            "headers": data.get("headers") or {},
            "timeout": data["timeout_seconds"],
            "scope": data["scope"],
        }
        if change:
            saved = endpoint_update(
                endpoint=Endpoint.objects.get(pk=obj.pk),
                actor=request.user,  # type: ignore[arg-type]
                **fields,
                max_in_flight=data["max_in_flight"],
                is_active=data["is_active"],
            )
        else:
            saved = endpoint_create(owner=data["owner"], **fields)
            if data["max_in_flight"] != saved.max_in_flight or not data["is_active"]:
                saved = endpoint_update(
                    endpoint=saved,
                    actor=request.user,  # type: ignore[arg-type]
                    max_in_flight=data["max_in_flight"],
                    is_active=data["is_active"],
                )
            self.message_user(
                request,
                f"The signing secret of {saved.name!r}, shown this once: {saved.secret}",
                messages.WARNING,
            )
        obj.pk = saved.pk
        obj._state.adding = False

    @admin.action(description="Send a test event")
    def send_test(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        for endpoint in queryset:
            delivery = endpoint_test(endpoint=endpoint, actor=request.user)  # type: ignore[arg-type]
            attempt = delivery.attempts.last()
            outcome = (
                (
                    f"HTTP {attempt.status_code}"
                    if attempt and attempt.status_code
                    else attempt.error
                )
                if attempt
                else "not sent"
            )
            self.message_user(
                request,
                f"{endpoint.name}: {delivery.status} ({outcome})",
                messages.SUCCESS if delivery.status == DeliveryStatus.SUCCEEDED else messages.ERROR,
            )

    @admin.action(description="Redeliver failed deliveries")
    def redeliver_failed(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        total = 0
        for endpoint in queryset:
            try:
                total += deliveries_redeliver_failed(endpoint=endpoint, actor=request.user)  # type: ignore[arg-type]
            except ApplicationError as exc:
                self.message_user(request, f"{endpoint.name}: {exc.message}", messages.WARNING)
        self.message_user(request, f"Queued {total} failed deliveries again.")

    @admin.action(description="Rotate the signing secret (the old one signs for 24 h more)")
    def rotate_secret(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        for endpoint in queryset:
            rotated = endpoint_rotate_secret(endpoint=endpoint, actor=request.user)  # type: ignore[arg-type]
            self.message_user(
                request,
                f"New secret of {rotated.name!r}, shown this once: {rotated.secret}",
                messages.WARNING,
            )

    @admin.action(description="Enable (forget the failures)")
    def enable(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        count = 0
        for endpoint in queryset.filter(is_active=False):
            endpoint_update(endpoint=endpoint, actor=request.user, is_active=True)  # type: ignore[arg-type]
            count += 1
        self.message_user(request, f"Enabled {count} endpoints.")

    @admin.action(description="Disable")
    def disable(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        count = 0
        for endpoint in queryset.filter(is_active=True):
            endpoint_update(endpoint=endpoint, actor=request.user, is_active=False)  # type: ignore[arg-type]
            count += 1
        self.message_user(request, f"Disabled {count} endpoints.")


class AttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    fields = [
        "number",
        "started_at",
        "duration_ms",
        "status_code",
        "succeeded",
        "error",
        "response_excerpt",
        "address",
        "webhook_timestamp",
    ]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyModelAdmin):
    list_display = [
        "event_type",
        "endpoint",
        "status",
        "attempt_count",
        "last_status_code",
        "last_error_short",
        "next_attempt_at",
        "created_at",
    ]
    list_filter = ["status", "event_type", "is_test"]
    list_select_related = ["endpoint"]
    search_fields = ["event__id", "endpoint__name", "endpoint__url"]
    inlines = [AttemptInline]
    actions = ["redeliver"]
    readonly_fields = [
        "id",
        "endpoint",
        "event_link",
        "event_type",
        "status",
        "attempt_count",
        "retry_step",
        "next_attempt_at",
        "lease_until",
        "last_status_code",
        "last_error",
        "last_attempt_at",
        "delivered_at",
        "is_test",
        "created_at",
    ]
    exclude = ["event"]

    @admin.display(description="last error")
    def last_error_short(self, delivery: Delivery) -> str:
        return delivery.last_error[:80]

    @admin.display(description="event")
    def event_link(self, delivery: Delivery) -> str:
        url = reverse("admin:core_event_change", args=[delivery.event_id])
        return format_html('<a href="{}">{}</a>', url, delivery.event_id)

    @admin.action(description="Redeliver")
    def redeliver(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        count = 0
        for delivery in queryset:
            try:
                delivery_redeliver(delivery=delivery, actor=request.user)  # type: ignore[arg-type]
                count += 1
            except ApplicationError as exc:
                self.message_user(request, f"{delivery.pk}: {exc.message}", messages.WARNING)
        self.message_user(request, f"Queued {count} deliveries again.")


@admin.register(Event)
class EventAdmin(ReadOnlyModelAdmin):
    """The kernel's outbox (core.events): what happened, and when it was dispatched."""

    list_display = ["id", "type", "owner_id", "created_at", "dispatched_at", "dispatch_attempts"]
    list_filter = ["type"]
    search_fields = ["id", "type"]
    readonly_fields = [
        "id",
        "type",
        "owner_id",
        "data",
        "created_at",
        "dispatched_at",
        "dispatch_attempts",
        "dispatch_error",
    ]
