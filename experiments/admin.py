"""Experiments in the admin: the list with status, units and lifecycle actions; the edit form
with variants and metrics (a draft's only: frozen once started); a results page with the
lift plot, the metric over time, the tables and complete-with-winner; the read-only
records (assignments, exposures of replies, events, alerts). Writes go through the
services."""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from agents.selectors import agent_list
from agents.services import agent_update
from core.admin_base import ReadOnlyModelAdmin
from core.errors import ApplicationError
from experiments import rules
from experiments.charts import lift_chart_svg, metric_chart_svg
from experiments.models import (
    Assignment,
    Experiment,
    ExperimentAlert,
    Exposure,
    Metric,
    MetricEvent,
    Variant,
)
from experiments.selectors import effective_traffic, experiment_results, metric_daily
from experiments.services import (
    EDITABLE_WHILE_RUNNING,
    FIELDS,
    experiment_cancel,
    experiment_complete,
    experiment_create,
    experiment_pause,
    experiment_start,
    experiment_update,
)

PLOT_DAYS = 30
AGENT_FIELDS = ("system_prompt", "model", "temperature", "max_tokens")


def _form_errors(form: forms.BaseForm, exc: ApplicationError) -> None:
    details = exc.details if isinstance(exc.details, dict) else {}
    if not details:
        form.add_error(None, exc.message)
    for field, problems in details.items():
        target = field if field in form.fields else None
        texts = problems if isinstance(problems, list) else [str(problems)]
        form.add_error(
            target, [f"{field}: {text}" if target is None else str(text) for text in texts]
        )


class ExperimentForm(forms.ModelForm):
    agent = forms.ModelChoiceField(
        queryset=None,  # type: ignore[arg-type]  (the operator's agents, set per request)
        required=False,
        help_text="The agent whose conversations it covers; empty: conversations without one.",
    )

    class Meta:
        model = Experiment
        fields = [name for name in FIELDS if name != "agent_id"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "agent" in self.fields and self.instance.agent_id:
            self.initial["agent"] = self.instance.agent_id

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        given = {
            k: v for k, v in cleaned.items() if k in FIELDS and k not in ("start_at", "end_at")
        }
        try:
            rules.settings_validate(given)
        except ApplicationError as exc:
            _form_errors(self, exc)
        adding = self.instance._state.adding
        owner = getattr(self, "request_user", None) if adding else self.instance.owner
        key = cleaned.get("key")
        if key and owner is not None:
            taken = Experiment.objects.filter(owner=owner, key=key).exclude(pk=self.instance.pk)
            if taken.exists():
                self.add_error("key", "Already used by another of this owner's experiments.")
        return cleaned


class _ChildFormSet(BaseInlineFormSet):
    """Rows checked by the service's rules (the same as the API's) before anything is saved."""

    row_fields: tuple[str, ...] = ()

    def rows(self) -> list[dict[str, Any]]:
        return [
            {name: form.cleaned_data[name] for name in self.row_fields if name in form.cleaned_data}
            for form in self.forms
            if form.cleaned_data and not form.cleaned_data.get("DELETE")
        ]

    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        try:
            self.validated = self.validate(self.rows())
        except ApplicationError as exc:
            details = exc.details if isinstance(exc.details, dict) else {}
            raise forms.ValidationError(
                [f"{k}: {'; '.join(map(str, v))}" for k, v in details.items()] or exc.message
            ) from exc

    def validate(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        raise NotImplementedError


class VariantFormSet(_ChildFormSet):
    row_fields = ("name", "is_control", "weight", "configuration")

    def validate(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        kind = self.data.get("type") or self.instance.type
        for row in rows:
            row["configuration"] = row.get("configuration") or {}
        return rules.variants_validate(kind, rows)


class MetricFormSet(_ChildFormSet):
    row_fields = tuple(sorted(rules.METRIC_FIELDS))

    def validate(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for row in rows:
            for name in ("aggregation", "direction"):
                if not row.get(name):
                    row.pop(name, None)
        return rules.metrics_validate(rows)


class _DraftOnlyInline(admin.TabularInline):
    extra = 0

    def _draft(self, obj: Experiment | None) -> bool:
        return obj is None or obj.status == Experiment.Status.DRAFT

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._draft(obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._draft(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._draft(obj) and super().has_delete_permission(request, obj)


class VariantInline(_DraftOnlyInline):
    model = Variant
    formset = VariantFormSet
    fields = ["name", "is_control", "weight", "configuration"]


class MetricForm(forms.ModelForm):
    aggregation = forms.ChoiceField(
        choices=[("", "(the type's default)"), *Metric.Aggregation.choices], required=False
    )
    direction = forms.ChoiceField(
        choices=[("", "(the type's default)"), *Metric.Direction.choices], required=False
    )

    class Meta:
        model = Metric
        fields = [
            "name",
            "type",
            "aggregation",
            "direction",
            "primary",
            "guardrail",
            "minimum_detectable_effect",
            "guardrail_threshold",
        ]


class MetricInline(_DraftOnlyInline):
    model = Metric
    form = MetricForm
    formset = MetricFormSet
    fields = MetricForm.Meta.fields


class StatusFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "Running or paused"), ("ended", "Completed or cancelled")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> Any:
        if self.value() == "active":
            return queryset.filter(status__in=["running", "paused"])
        if self.value() == "ended":
            return queryset.filter(status__in=["completed", "cancelled"])
        return queryset


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    form = ExperimentForm
    inlines = [VariantInline, MetricInline]
    list_display = [
        "name",
        "key",
        "type",
        "status_badge",
        "allocation",
        "traffic_now",
        "units",
        "owner",
        "started_at",
        "results_link",
    ]
    list_filter = [StatusFilter, "status", "type", "allocation"]
    list_select_related = ["owner"]
    search_fields = ["name", "key", "description"]
    actions = ["start_experiments", "pause_experiments", "cancel_experiments"]
    readonly_fields = [
        "status",
        "owner",
        "started_at",
        "paused_at",
        "completed_at",
        "winner",
        "promoted_to",
        "results_link",
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Experiment]:
        return super().get_queryset(request).annotate(_units=Count("assignments"))

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        if "agent" in form.base_fields:
            form.base_fields["agent"].queryset = agent_list(user=request.user)  # type: ignore[attr-defined]

        class WithRequest(form):  # type: ignore[misc, valid-type]
            request_user = request.user

        return WithRequest

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        return [
            (None, {"fields": ["name", "key", "type", "description", "agent"]}),
            (
                "Allocation",
                {
                    "fields": [
                        "allocation",
                        "traffic_percentage",
                        "ramp_schedule",
                        "targeting",
                        "confidence_level",
                        "start_at",
                        "end_at",
                    ]
                },
            ),
            ("State", {"fields": self.readonly_fields}),
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None or obj.status == Experiment.Status.DRAFT:
            return self.readonly_fields
        editable = (
            EDITABLE_WHILE_RUNNING
            if obj.status in ("running", "paused")
            else {"name", "description"}
        )
        frozen = [
            name for name in [*FIELDS, "agent"] if name != "agent_id" and name not in editable
        ]
        return [*self.readonly_fields, *frozen]

    def agent(self, obj: Experiment) -> str:  # shown read-only once started
        return str(obj.agent_id or "-")

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Experiment) -> str:
        colours = {"running": "#0072B2", "paused": "#E69F00", "completed": "#009E73"}
        return format_html(
            '<strong style="color: {}">{}</strong>', colours.get(obj.status, "#666"), obj.status
        )

    @admin.display(description="traffic now")
    def traffic_now(self, obj: Experiment) -> str:
        return f"{effective_traffic(obj):g}%"

    @admin.display(description="units", ordering="_units")
    def units(self, obj: Any) -> int:
        return obj._units

    @admin.display(description="results")
    def results_link(self, obj: Experiment) -> str:
        if obj.pk is None:
            return "-"
        url = reverse("admin:experiments_experiment_results", args=[obj.pk])
        return format_html('<a href="{}">Results</a>', url)

    # --- saving through the services -----------------------------------------------------
    def _fields(self, form: Any, names: list[str]) -> dict[str, Any]:
        fields = {name: form.cleaned_data[name] for name in names if name in form.cleaned_data}
        if "agent" in names and "agent" in form.cleaned_data:
            agent = form.cleaned_data["agent"]
            fields["agent_id"] = agent.pk if agent is not None else None
        fields.pop("agent", None)
        return fields

    def save_model(self, request: HttpRequest, obj: Experiment, form: Any, change: bool) -> None:
        if change:
            names = [n for n in form.changed_data]
            saved = experiment_update(
                experiment=Experiment.objects.get(pk=obj.pk),
                actor=request.user,  # type: ignore[arg-type]
                **self._fields(form, names),
            )
        else:
            names = [*form.cleaned_data]
            saved = experiment_create(owner=request.user, **self._fields(form, names))  # type: ignore[arg-type]
        # The admin goes on with `obj` (its log entry, the redirect): make it the saved row.
        obj.pk = saved.pk
        obj.owner_id = saved.owner_id
        obj._state.adding = False

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        children: dict[str, Any] = {}
        for formset in formsets:
            # What formset.save() would record, for the admin's change message.
            formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
            if formset.has_changed() and hasattr(formset, "validated"):
                key = "variants" if formset.model is Variant else "metrics"
                children[key] = formset.validated
        if children:
            experiment_update(
                experiment=Experiment.objects.get(pk=form.instance.pk),
                actor=request.user,  # type: ignore[arg-type]
                **children,
            )

    # --- actions ---------------------------------------------------------------------------
    def _each(
        self, request: HttpRequest, queryset: QuerySet[Experiment], operation: Any, done: str
    ) -> None:
        succeeded, failures = 0, []
        for experiment in queryset:
            try:
                operation(experiment=experiment, actor=request.user)
            except ApplicationError as exc:
                failures.append(f"{experiment.name} ({experiment.key}): {exc.message}")
            else:
                succeeded += 1
        self.message_user(request, f"{done} {succeeded} experiment(s).", messages.SUCCESS)
        for failure in failures:
            self.message_user(request, failure, messages.ERROR)

    @admin.action(description="Start (or resume) selected experiments")
    def start_experiments(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        self._each(request, queryset, experiment_start, "Started")

    @admin.action(description="Pause selected experiments")
    def pause_experiments(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        self._each(request, queryset, experiment_pause, "Paused")

    @admin.action(description="Cancel selected experiments")
    def cancel_experiments(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        self._each(request, queryset, experiment_cancel, "Cancelled")

    # --- the results page ------------------------------------------------------------------
    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        return [
            path(
                "<uuid:experiment_id>/results/",
                view(self.results_view),
                name="experiments_experiment_results",
            ),
            path(
                "<uuid:experiment_id>/operate/<str:operation>/",
                view(self.operate_view),
                name="experiments_experiment_operate",
            ),
            *super().get_urls(),
        ]

    def _experiment(self, request: HttpRequest, experiment_id: UUID, *, change: bool) -> Experiment:
        experiment = get_object_or_404(Experiment, pk=experiment_id)
        allowed = (
            self.has_change_permission(request, experiment)
            if change
            else self.has_view_permission(request, experiment)
        )
        if not allowed:
            raise PermissionDenied
        return experiment

    def results_view(self, request: HttpRequest, experiment_id: UUID) -> HttpResponse:
        experiment = self._experiment(request, experiment_id, change=False)
        results = experiment_results(experiment=experiment)
        names = [m["name"] for m in results["metrics"]]
        primary = next((m["name"] for m in results["metrics"] if m["role"] == "primary"), None)
        chosen = request.GET.get("metric")
        metric = chosen if chosen in names else primary or (names[0] if names else None)
        today = timezone.now().astimezone(dt.UTC).date()
        start = today - dt.timedelta(days=PLOT_DAYS - 1)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Results: {experiment.name}",
            "experiment": experiment,
            "results": results,
            "lift_svg": lift_chart_svg(results),
            "metric": metric,
            "metric_names": names,
            "metric_svg": metric_chart_svg(
                metric_daily(experiment=experiment, metric=metric) if metric else [],
                metric=metric or "-",
                start=start,
                end=today,
            ),
            "can_change": self.has_change_permission(request, experiment),
            "promotions": [
                (value, label)
                for value, label in Experiment.Promotion.choices
                if value != Experiment.Promotion.AGENT or experiment.agent_id
            ],
        }
        return TemplateResponse(request, "admin/experiments/experiment/results.html", context)

    @method_decorator(require_POST)
    def operate_view(
        self, request: HttpRequest, experiment_id: UUID, operation: str
    ) -> HttpResponse:
        experiment = self._experiment(request, experiment_id, change=True)
        try:
            if operation == "complete":
                self._complete(request, experiment)
            elif operation in ("start", "pause", "cancel"):
                service = {
                    "start": experiment_start,
                    "pause": experiment_pause,
                    "cancel": experiment_cancel,
                }
                service[operation](experiment=experiment, actor=request.user)  # type: ignore[operator]
            else:
                raise ApplicationError(f"Unknown operation {operation!r}.")
        except ApplicationError as exc:
            self.message_user(request, exc.message, level=messages.ERROR)
            for field, problems in (exc.details if isinstance(exc.details, dict) else {}).items():
                self.message_user(request, f"{field}: {problems}", level=messages.ERROR)
        else:
            experiment.refresh_from_db()
            self.message_user(
                request,
                f"{experiment.name} ({experiment.key}) is {experiment.status}.",
                messages.SUCCESS,
            )
        return HttpResponseRedirect(
            reverse("admin:experiments_experiment_results", args=[experiment.pk])
        )

    def _complete(self, request: HttpRequest, experiment: Experiment) -> None:
        promote = request.POST.get("promote", "")
        with transaction.atomic():
            experiment = experiment_complete(
                experiment=experiment,
                actor=request.user,  # type: ignore[arg-type]
                winner=request.POST.get("winner", ""),
                promote=promote,
            )
            if promote == Experiment.Promotion.AGENT:
                # agents sit above experiments: the interface writes the agent.
                agent = agent_list(user=request.user).filter(pk=experiment.agent_id).first()  # type: ignore[arg-type]
                configuration = experiment.winner.configuration if experiment.winner else {}
                fields = {k: v for k, v in configuration.items() if k in AGENT_FIELDS}
                if agent is None or not fields:
                    raise ApplicationError("The winner changes nothing an agent holds.")
                agent_update(agent=agent, actor=request.user, **fields)  # type: ignore[arg-type]


class _ExperimentRecordAdmin(ReadOnlyModelAdmin):
    list_select_related = ["experiment", "variant"]
    list_filter = [("experiment", admin.RelatedOnlyFieldListFilter)]


@admin.register(Assignment)
class AssignmentAdmin(_ExperimentRecordAdmin):
    list_display = ["unit_id", "experiment", "variant", "source", "created_at"]
    search_fields = ["unit_id"]


@admin.register(Exposure)
class ExposureAdmin(_ExperimentRecordAdmin):
    """Which experiment and variant wrote a reply (search by the message's id)."""

    list_display = ["message_id", "experiment", "variant", "configuration", "created_at"]
    search_fields = ["message_id"]


@admin.register(MetricEvent)
class MetricEventAdmin(_ExperimentRecordAdmin):
    list_display = [
        "metric",
        "value",
        "experiment",
        "variant",
        "source",
        "message_id",
        "created_at",
    ]
    list_filter = [*_ExperimentRecordAdmin.list_filter, "source", "metric"]


@admin.register(ExperimentAlert)
class ExperimentAlertAdmin(ReadOnlyModelAdmin):
    list_display = ["created_at", "experiment", "kind", "metric", "variant", "message"]
    list_select_related = ["experiment"]
    list_filter = ["kind", ("experiment", admin.RelatedOnlyFieldListFilter)]
