"""Agents in the admin: prompt history, variants with their posteriors, the tool registry,
and Thompson-sampling choices (read-only). Saving goes through the services."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from agents.mcp import mcp_server_refresh, mcp_server_save
from agents.models import Agent, AgentPromptVersion, AgentVariant, AgentVariantChoice, MCPServer
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
    list_display = ["name", "slug", "type", "owner_name", "status", "model", "variant_count"]
    list_filter = ["status", "type", ("owner", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["owner"]
    search_fields = ["name", "slug", "description"]
    readonly_fields = ["owner", "created_by", "created_at", "updated_at", "available_tools"]
    inlines = [VariantInline, PromptVersionInline]

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
        ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Agent]:
        return super().get_queryset(request).annotate(_variants=Count("variants"))

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
        # Only the variants' `active` flag is editable inline; prompt history is read-only.
        for formset in formsets:
            formset.save()


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
            )
            return
        saved = variant_create(
            agent=data["agent"],
            name=data["name"],
            system_prompt=data["system_prompt"],
            parameters=data["parameters"] or {},
        )
        if not data["active"]:
            variant_update(
                variant=saved,
                system_prompt=saved.system_prompt,
                parameters=saved.parameters,
                active=False,
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
        fields = ["name", "transport", "command", "args", "url", "enabled"]

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
                "<li><code>mcp__{}__{}</code>: {}</li>",
                ((obj.name, t.get("name", ""), t.get("description", "")) for t in obj.tools),
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
