"""Agents in the admin: metric columns, prompt history, variants with their posteriors, a
plot of feedback over time, the tool registry, MCP servers, and the read-only records
(Thompson-sampling choices, interactions with their tool-call traces). Saving goes through
the services."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from agents.charts import feedback_chart_svg
from agents.mcp import mcp_server_refresh, mcp_server_save
from agents.models import (
    Agent,
    AgentInteraction,
    AgentPromptVersion,
    AgentVariant,
    AgentVariantChoice,
    MCPServer,
)
from agents.selectors import agent_feedback_daily, agent_metrics, agents_with_metrics
from agents.services import (
    EDITABLE_FIELDS,
    agent_create,
    agent_update,
    agent_validate,
    variant_create,
    variant_parameters_validate,
    variant_update,
)
from agents.tools import tool_list
from core.admin_base import ReadOnlyModelAdmin
from core.errors import ApplicationError
from core.validation import InvalidInput, validate_url


def _form_errors(form: forms.ModelForm, exc: ApplicationError) -> None:
    details = exc.details if isinstance(exc.details, dict) else {}
    if not details:
        form.add_error(None, exc.message)
    for field, problems in details.items():
        target = field if field in form.fields else None
        texts = problems if isinstance(problems, list) else [str(problems)]
        form.add_error(target, [str(text) for text in texts])


class AgentForm(forms.ModelForm):
    shared = forms.BooleanField(
        required=False,
        initial=True,
        help_text="On add: an agent every user may use (no owner). Unticked: yours.",
    )

    class Meta:
        model = Agent
        fields = [*EDITABLE_FIELDS]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        fields = {k: v for k, v in cleaned.items() if k in EDITABLE_FIELDS}
        try:
            agent_validate(fields)
        except ApplicationError as exc:
            _form_errors(self, exc)
        return cleaned


class PromptVersionInline(admin.TabularInline):
    model = AgentPromptVersion
    fields = ["version", "author", "created_at", "system_prompt"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["-version"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class VariantInline(admin.TabularInline):
    model = AgentVariant
    fields = ["name", "active", "alpha", "beta", "feedback_count", "posterior"]
    readonly_fields = ["name", "alpha", "beta", "feedback_count", "posterior"]
    extra = 0
    can_delete = False
    show_change_link = True

    @admin.display(description="posterior mean")
    def posterior(self, obj: AgentVariant) -> str:
        return f"{obj.posterior_mean:.3f}"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # variants are added on their own page (through the service)


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    form = AgentForm
    list_display = [
        "name",
        "slug",
        "type",
        "owner_name",
        "status",
        "model",
        "variant_count",
        "replies",
        "mean_latency",
        "mean_feedback",
        "tool_call_rate",
    ]
    list_filter = ["status", "type", ("owner", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["owner"]
    search_fields = ["name", "slug", "description"]
    readonly_fields = [
        "owner",
        "created_by",
        "created_at",
        "updated_at",
        "available_tools",
        "metrics_30_days",
        "feedback_plot",
    ]
    inlines = [VariantInline, PromptVersionInline]
    PLOT_DAYS = 30

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        main = ["name", "slug", "type", "status", "description", "system_prompt"]
        if obj is None:
            main.insert(0, "shared")
        return [
            (None, {"fields": main}),
            ("Model", {"fields": ["model", "temperature", "max_tokens", "fallback_model"]}),
            (
                "Capabilities, tools, knowledge",
                {"fields": ["capabilities", "tools", "available_tools", "knowledge_filter"]},
            ),
            ("Record", {"fields": ["owner", "created_by", "created_at", "updated_at"]}),
            *(
                [("Performance", {"fields": ["metrics_30_days", "feedback_plot"]})]
                if obj is not None
                else []
            ),
        ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Agent]:
        # The metric columns are correlated subqueries of the same statement: no query per row.
        return agents_with_metrics(
            super().get_queryset(request).annotate(_variants=Count("variants"))
        )

    @admin.display(description="replies", ordering="_replies")
    def replies(self, obj: Any) -> int:
        return obj._replies

    @admin.display(description="mean latency", ordering="_latency_mean")
    def mean_latency(self, obj: Any) -> str:
        return "-" if obj._latency_mean is None else f"{obj._latency_mean:.0f} ms"

    @admin.display(description="mean feedback", ordering="_feedback_mean")
    def mean_feedback(self, obj: Any) -> str:
        return "-" if obj._feedback_mean is None else f"{obj._feedback_mean:.2f}"

    @admin.display(description="tool-call rate", ordering="_tool_call_rate")
    def tool_call_rate(self, obj: Any) -> str:
        return "-" if obj._tool_call_rate is None else f"{obj._tool_call_rate:.0%}"

    @admin.display(description="last 30 days")
    def metrics_30_days(self, obj: Agent) -> SafeString:
        now = timezone.now()
        m = agent_metrics(agent=obj, since=now - dt.timedelta(days=self.PLOT_DAYS), until=now)

        def figure(value: float | None, pattern: str) -> str:
            return "-" if value is None else pattern.format(value)

        rows = [
            ("replies", str(m["replies"])),
            ("error rate", figure(m["error_rate"], "{:.1%}")),
            (
                "latency p50 / p95",
                f"{figure(m['latency_ms']['p50'], '{:.0f}')} / "
                f"{figure(m['latency_ms']['p95'], '{:.0f}')} ms",
            ),
            ("mean tokens (in + out)", figure(m["tokens"]["mean_total"], "{:.1f}")),
            (
                "mean feedback",
                f"{figure(m['feedback']['mean'], '{:.3f}')} ({m['feedback']['count']} ratings)",
            ),
            (
                "tool calls",
                f"{figure(m['tool_calls']['rate'], '{:.0%}')} of replies, "
                f"{figure(m['tool_calls']['mean_per_reply'], '{:.2f}')} per reply",
            ),
            (
                "confidence",
                f"{figure(m['confidence']['mean'], '{:.3f}')} "
                f"({m['confidence']['count']} measured)",
            ),
            (
                "models used",
                ", ".join(f"{r['model'] or '?'} ({r['replies']})" for r in m["models"]) or "-",
            ),
        ]
        return format_html(
            "<table>{}</table>",
            format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows),
        )

    @admin.display(description="feedback over time")
    def feedback_plot(self, obj: Agent) -> SafeString:
        today = timezone.now().astimezone(dt.UTC).date()
        start = today - dt.timedelta(days=self.PLOT_DAYS - 1)
        since = dt.datetime.combine(start, dt.time.min, tzinfo=dt.UTC)
        points = agent_feedback_daily(agent=obj, since=since)
        return feedback_chart_svg(points, start=start, end=today)

    @admin.display(description="owner", ordering="owner__username")
    def owner_name(self, obj: Agent) -> str:
        return obj.owner.username if obj.owner else "(shared)"

    @admin.display(description="variants", ordering="_variants")
    def variant_count(self, obj: Any) -> int:
        return obj._variants

    @admin.display(description="tools in the registry")
    def available_tools(self, obj: Any = None) -> SafeString:
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                "<li><code>{}</code>: {}{}</li>",
                (
                    (
                        spec.name,
                        spec.description,
                        " (needs approval)" if spec.requires_approval else "",
                    )
                    for spec in tool_list()
                ),
            ),
        )

    def save_model(self, request: HttpRequest, obj: Agent, form: Any, change: bool) -> None:
        actor = request.user
        if change:
            fields = {f: form.cleaned_data[f] for f in form.changed_data if f in EDITABLE_FIELDS}
            saved = agent_update(agent=Agent.objects.get(pk=obj.pk), actor=actor, **fields)  # type: ignore[arg-type]
        else:
            fields = {f: form.cleaned_data[f] for f in EDITABLE_FIELDS if f in form.cleaned_data}
            saved = agent_create(
                actor=actor, shared=form.cleaned_data.get("shared", False), **fields
            )  # type: ignore[arg-type]
        # The admin goes on with `obj` (its log entry, the redirect): make it the saved row.
        obj.pk = saved.pk
        obj.owner_id = saved.owner_id
        obj._state.adding = False

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        # Only the variants' `active` flag is editable inline (through the service, as on
        # the variant's own page); prompt history is read-only.
        for formset in formsets:
            if formset.model is not AgentVariant:
                formset.save()
                continue
            # What formset.save() would record, for the admin's change message.
            formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
            for inline_form in formset.forms:
                if inline_form.instance.pk and "active" in inline_form.changed_data:
                    variant = variant_update(
                        variant=AgentVariant.objects.get(pk=inline_form.instance.pk),
                        active=inline_form.cleaned_data["active"],
                        actor=request.user,  # type: ignore[arg-type]
                    )
                    formset.changed_objects.append((variant, ["active"]))


class VariantForm(forms.ModelForm):
    class Meta:
        model = AgentVariant
        fields = ["agent", "name", "system_prompt", "parameters", "active"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        try:
            variant_parameters_validate(cleaned.get("parameters") or {})
        except ApplicationError as exc:
            _form_errors(self, exc)
        return cleaned


@admin.register(AgentVariant)
class AgentVariantAdmin(admin.ModelAdmin):
    form = VariantForm
    list_display = ["name", "agent", "active", "alpha", "beta", "posterior", "feedback_count"]
    list_filter = ["active", ("agent", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["agent"]
    readonly_fields = ["alpha", "beta", "reward_sum", "feedback_count", "created_at"]

    @admin.display(description="posterior mean")
    def posterior(self, obj: AgentVariant) -> str:
        return f"{obj.posterior_mean:.3f}"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is not None:  # the agent and name of a variant with a history stay
            return [*self.readonly_fields, "agent", "name"]
        return self.readonly_fields

    def save_model(self, request: HttpRequest, obj: AgentVariant, form: Any, change: bool) -> None:
        data = form.cleaned_data
        if change:
            variant_update(
                variant=obj,
                system_prompt=data["system_prompt"],
                parameters=data["parameters"] or {},
                active=data["active"],
                actor=request.user,  # type: ignore[arg-type]
            )
            return
        saved = variant_create(
            agent=data["agent"],
            name=data["name"],
            system_prompt=data["system_prompt"],
            parameters=data["parameters"] or {},
            active=data["active"],
            actor=request.user,  # type: ignore[arg-type]
        )
        obj.pk = saved.pk
        obj._state.adding = False


@admin.register(AgentVariantChoice)
class AgentVariantChoiceAdmin(ReadOnlyModelAdmin):
    list_display = ["created_at", "agent", "variant", "user", "sample", "reward"]
    list_filter = [("agent", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["agent", "variant", "user"]
    fields = [
        "agent",
        "variant",
        "user",
        "sample",
        "samples",
        "reward",
        "rewarded_at",
        "created_at",
    ]
    readonly_fields = fields
    date_hierarchy = "created_at"


class MCPServerForm(forms.ModelForm):
    class Meta:
        model = MCPServer
        fields = ["name", "transport", "command", "args", "url", "enabled", "approval_tools"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        transport = cleaned.get("transport")
        if transport == MCPServer.Transport.STDIO and not cleaned.get("command"):
            self.add_error("command", "A stdio server needs a command.")
        if transport == MCPServer.Transport.STREAMABLE_HTTP:
            try:
                cleaned["url"] = validate_url(cleaned.get("url") or "")
            except InvalidInput as exc:
                self.add_error("url", str(exc))
        args = cleaned.get("args")
        if args is not None and (
            not isinstance(args, list) or not all(isinstance(a, str) for a in args)
        ):
            self.add_error("args", "A list of strings.")
        approval = cleaned.get("approval_tools")
        if approval is not None and (
            not isinstance(approval, list) or not all(isinstance(a, str) for a in approval)
        ):
            self.add_error("approval_tools", 'A list of tool names, e.g. ["delete_file"].')
        elif approval and self.instance.tools:
            # Names are checked against the tools last listed; a new server's are listed on save.
            unknown = sorted(set(approval) - {t.get("name") for t in self.instance.tools})
            if unknown:
                self.add_error("approval_tools", f"Not tools of this server: {', '.join(unknown)}.")
        return cleaned


@admin.register(MCPServer)
class MCPServerAdmin(admin.ModelAdmin):
    """Operators register MCP servers; saving lists their tools and records their health."""

    form = MCPServerForm
    list_display = ["name", "transport", "enabled", "healthy", "tool_count", "checked_at"]
    list_filter = ["enabled", "healthy", "transport"]
    readonly_fields = ["healthy", "last_error", "tool_names", "checked_at", "created_at"]
    actions = ["refresh"]

    @admin.display(description="tools")
    def tool_count(self, obj: MCPServer) -> int:
        return len(obj.tools)

    @admin.display(description="tools (as agents name them)")
    def tool_names(self, obj: MCPServer) -> SafeString:
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                "<li><code>mcp__{}__{}</code>{}: {}</li>",
                (
                    (
                        obj.name,
                        t.get("name", ""),
                        " (needs approval)" if t.get("name") in obj.approval_tools else "",
                        t.get("description", ""),
                    )
                    for t in obj.tools
                ),
            ),
        )

    def save_model(self, request: HttpRequest, obj: MCPServer, form: Any, change: bool) -> None:
        server = mcp_server_save(server=obj, actor=request.user)
        if server.healthy:
            self.message_user(request, f"{server.name}: {len(server.tools)} tools.")
        else:
            self.message_user(
                request, f"{server.name} is unhealthy: {server.last_error}", messages.WARNING
            )

    @admin.action(description="Refresh tools and health")
    def refresh(self, request: HttpRequest, queryset: QuerySet[MCPServer]) -> None:
        healthy = sum(bool(mcp_server_refresh(server=server).healthy) for server in queryset)
        total = queryset.count()
        self.message_user(
            request,
            f"Refreshed {total} servers: {healthy} healthy, {total - healthy} unhealthy.",
            messages.SUCCESS if healthy == total else messages.WARNING,
        )


class HasErrorFilter(admin.SimpleListFilter):
    title = "error"
    parameter_name = "has_error"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "With an error"), ("no", "Without")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "yes":
            return queryset.exclude(error="")
        if self.value() == "no":
            return queryset.filter(error="")
        return queryset


class HasFeedbackFilter(admin.SimpleListFilter):
    title = "feedback"
    parameter_name = "has_feedback"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Rated"), ("no", "Not rated")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() in ("yes", "no"):
            return queryset.filter(feedback_reward__isnull=self.value() == "no")
        return queryset


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


@admin.register(AgentInteraction)
class AgentInteractionAdmin(ReadOnlyModelAdmin):
    """Every reply of every agent: what it cost, the tools it called, how it was rated."""

    list_display = [
        "created_at",
        "agent",
        "source",
        "variant",
        "model_used",
        "latency_ms",
        "tokens_in",
        "tokens_out",
        "tool_call_count",
        "has_error",
        "confidence",
        "feedback_reward",
    ]
    list_filter = [
        ("agent", admin.RelatedOnlyFieldListFilter),
        "source",
        HasErrorFilter,
        HasFeedbackFilter,
        "confidence_method",
    ]
    list_select_related = ["agent", "variant", "user"]
    search_fields = ["=message_id", "=conversation_id", "model_used", "error"]
    date_hierarchy = "created_at"
    fields = [
        "agent",
        "variant",
        "choice",
        "user",
        "source",
        "conversation_id",
        "message_id",
        "model_used",
        "latency_ms",
        "tokens_in",
        "tokens_out",
        "error",
        "confidence",
        "confidence_method",
        "feedback_reward",
        "feedback_at",
        "created_at",
        "tool_call_trace",
    ]
    readonly_fields = fields

    @admin.display(description="error", boolean=True)
    def has_error(self, obj: AgentInteraction) -> bool:
        return bool(obj.error)

    @admin.display(description="tool calls")
    def tool_call_trace(self, obj: AgentInteraction) -> SafeString:
        if not obj.tool_calls:
            return format_html("<p>{}</p>", "No tool calls.")
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td><code>{}</code><br><small>{}</small></td>"
            "<td><pre style='white-space: pre-wrap; margin: 0'>{}</pre></td>"
            "<td><pre style='white-space: pre-wrap; margin: 0'>{}</pre></td>"
            "<td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    index,
                    call.get("name", "?"),
                    call.get("id", ""),
                    _pretty(call.get("args", {})),
                    call.get("result", ""),
                    "-" if call.get("latency_ms") is None else f"{call['latency_ms']} ms",
                    call.get("error") or "",
                    _pretty(call["approval"]) if call.get("approval") else "",
                )
                for index, call in enumerate(obj.tool_calls, start=1)
            ),
        )
        return format_html(
            "<table><thead><tr><th>#</th><th>tool</th><th>arguments</th><th>result</th>"
            "<th>latency</th><th>error</th><th>approval</th></tr></thead><tbody>{}</tbody>"
            "</table>",
            rows,
        )
