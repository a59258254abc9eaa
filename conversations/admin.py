from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from accounts.admin import UserAdmin
from accounts.models import User
from conversations.models import Conversation, Message, ModelPrice, ToolApproval
from conversations.selectors import conversation_list, conversation_tree, usage_by_owner
from conversations.services import (
    EDITABLE_FIELDS,
    approval_decide,
    conversation_delete,
    conversation_fork,
    conversation_settings_check,
    conversation_update,
)
from core.admin_base import ReadOnlyModelAdmin
from core.errors import ApplicationError


def answered_by(message: Message) -> str:
    """The agent (and variant) whose reply this is, from the reply's record."""
    agent = message.metadata.get("agent")
    if not agent:
        return ""
    variant = message.metadata.get("variant")
    return f"{agent['slug']} / {variant['name']}" if variant else agent["slug"]


def tool_trace(message: Message) -> SafeString:
    """The reply's tool calls as a table: name, arguments, result or error, latency, approval."""
    calls = message.tool_calls or []
    if not calls:
        return format_html("{}", "-")
    rows = format_html_join(
        "",
        "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
        (
            (
                call.get("name", ""),
                json.dumps(call.get("args", {}))[:300],
                (f"ERROR: {call['error']}" if call.get("error") else str(call.get("result") or ""))[
                    :300
                ],
                "" if call.get("latency_ms") is None else f"{call['latency_ms']} ms",
                call.get("approval") or "",
            )
            for call in calls
        ),
    )
    return format_html(
        "<table><tr><th>tool</th><th>args</th><th>result</th><th>latency</th>"
        "<th>approval</th></tr>{}</table>",
        rows,
    )


class MessageInline(admin.TabularInline):
    model = Message
    fields = [
        "position",
        "role",
        "status",
        "short_content",
        "agent_variant",
        "tools_called",
        "model",
        "tokens_in",
        "tokens_out",
        "cost",
        "latency_ms",
        "feedback_rating",
    ]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ["position"]

    @admin.display(description="content")
    def short_content(self, obj: Message) -> str:
        return obj.content[:200] + ("…" if len(obj.content) > 200 else "")

    @admin.display(description="agent / variant")
    def agent_variant(self, obj: Message) -> str:
        return answered_by(obj)

    @admin.display(description="tool calls")
    def tools_called(self, obj: Message) -> SafeString:
        return tool_trace(obj)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class LineageFilter(admin.SimpleListFilter):
    title = "lineage"
    parameter_name = "lineage"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("root", "Original"), ("branch", "Branch"), ("fork", "Fork")]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[Conversation]
    ) -> QuerySet[Conversation]:
        if self.value() == "root":
            return queryset.filter(parent__isnull=True, forked_from__isnull=True)
        if self.value() == "branch":
            return queryset.filter(parent__isnull=False)
        if self.value() == "fork":
            return queryset.filter(forked_from__isnull=False)
        return queryset


class ConversationAdminForm(forms.ModelForm):
    """The change form checks settings with the service's rules (conversation_settings_check),
    as the API does: out-of-range values and unknown model providers are form errors."""

    class Meta:
        model = Conversation
        fields = list(EDITABLE_FIELDS)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        changed = {
            name: cleaned[name]
            for name in self.changed_data
            if name in EDITABLE_FIELDS and name in cleaned
        }
        try:
            conversation_settings_check(changed)
        except ApplicationError as exc:
            details = exc.details if isinstance(exc.details, dict) else {}
            if not details:
                raise forms.ValidationError(exc.message) from exc
            for name, errors in details.items():
                self.add_error(name if name in self.fields else None, errors)
        return cleaned


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    form = ConversationAdminForm
    list_display = [
        "__str__",
        "owner",
        "model_used",
        "agent",
        "message_count",
        "tokens_in",
        "tokens_out",
        "cost",
        "lineage",
        "updated_at",
    ]
    list_filter = [LineageFilter, "workflow", "model", "agent", "owner__is_staff"]
    list_select_related = ["owner", "parent", "forked_from", "agent"]
    search_fields = ["title", "id", "owner__username", "summary"]
    date_hierarchy = "created_at"
    inlines = [MessageInline]
    actions = ["fork_conversations", "delete_with_checkpoints"]
    readonly_fields = [
        "id",
        "owner",
        "workflow",
        "agent",
        "agent_auto",
        "family_tree",
        "parent",
        "branch_point",
        "forked_from",
        "summary",
        "summarized_messages",
        "message_count",
        "tokens_in",
        "tokens_out",
        "cost",
        "turn_started_at",
        "created_at",
        "updated_at",
    ]
    fieldsets = [
        (None, {"fields": ["id", "owner", "title", "workflow", "agent", "agent_auto"]}),
        (
            "Model",
            {
                "fields": [
                    "model",
                    "temperature",
                    "max_tokens",
                    "system_prompt",
                    "memory_window",
                    "relevance_floor",
                    "metadata",
                ]
            },
        ),
        ("Memory", {"fields": ["summary", "summarized_messages"]}),
        ("Lineage", {"fields": ["family_tree", "parent", "branch_point", "forked_from"]}),
        (
            "Usage",
            {
                "fields": [
                    "message_count",
                    "tokens_in",
                    "tokens_out",
                    "cost",
                    "turn_started_at",
                    "created_at",
                    "updated_at",
                ]
            },
        ),
    ]

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # use the action that also drops checkpoints
        return actions

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # conversations start through the API

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Conversation], search_term: str
    ) -> tuple[QuerySet[Conversation], bool]:
        """The fields above, plus what the API's ``?q=`` finds: the full-text search over
        titles and message contents (the selector's, on its GIN indexes)."""
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        if search_term.strip():
            found = conversation_list(user=request.user, query=search_term).values("pk")  # type: ignore[arg-type]
            results = results | queryset.filter(pk__in=found)
        return results, may_have_duplicates

    @admin.display(description="model", ordering="model")
    def model_used(self, obj: Conversation) -> str:
        return obj.model or "(default)"

    @admin.display(description="lineage")
    def lineage(self, obj: Conversation) -> str:
        if obj.parent_id:
            return f"branch of {obj.parent}"
        if obj.forked_from_id:
            return f"fork of {obj.forked_from}"
        return "original"

    @admin.display(description="family tree")
    def family_tree(self, obj: Conversation) -> SafeString:
        def render(node: dict[str, Any]) -> SafeString:
            item: Conversation = node["conversation"]
            url = reverse("admin:conversations_conversation_change", args=[item.pk])
            label = format_html("<strong>{}</strong>" if item.pk == obj.pk else "{}", str(item))
            children = format_html_join("", "{}", ((render(child),) for child in node["children"]))
            return format_html(
                '<li><a href="{}">{}</a> <small>({}, {} messages)</small><ul>{}</ul></li>',
                url,
                label,
                node["kind"],
                item.message_count,
                children,
            )

        return format_html("<ul>{}</ul>", render(conversation_tree(conversation=obj)))

    def save_model(
        self, request: HttpRequest, obj: Conversation, form: forms.ModelForm, change: bool
    ) -> None:
        # Only changes reach here (adding is off): through the service, like the API's.
        changed = {
            name: getattr(obj, name) for name in form.changed_data if name in EDITABLE_FIELDS
        }
        conversation_update(conversation=obj, **changed)

    def delete_model(self, request: HttpRequest, obj: Conversation) -> None:
        conversation_delete(conversation=obj)

    @admin.action(description="Fork selected conversations (as their owners)")
    def fork_conversations(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> None:
        count = 0
        for conversation in queryset:
            conversation_fork(conversation=conversation, user=conversation.owner)
            count += 1
        self.message_user(request, f"Forked {count} conversation(s).", level=messages.SUCCESS)

    @admin.action(description="Delete selected conversations and their checkpoints")
    def delete_with_checkpoints(
        self, request: HttpRequest, queryset: QuerySet[Conversation]
    ) -> None:
        count = 0
        for conversation in queryset:
            conversation_delete(conversation=conversation)
            count += 1
        self.message_user(request, f"Deleted {count} conversation(s).", level=messages.SUCCESS)


@admin.register(Message)
class MessageAdmin(ReadOnlyModelAdmin):
    allow_delete = True
    list_display = [
        "short_content",
        "role",
        "status",
        "conversation",
        "position",
        "model",
        "agent_variant",
        "tokens_in",
        "tokens_out",
        "latency_ms",
        "feedback_rating",
        "created_at",
    ]
    list_filter = ["role", "status", "model", "feedback_rating"]
    list_select_related = ["conversation"]
    search_fields = ["content", "conversation__title", "conversation__id", "error"]
    date_hierarchy = "created_at"
    readonly_fields = [
        *(f.name for f in Message._meta.fields if f.name != "tool_calls"),
        "agent_variant",
        "tool_call_trace",
    ]

    @admin.display(description="content")
    def short_content(self, obj: Message) -> str:
        return obj.content[:80] or (obj.error[:80] if obj.error else "(empty)")

    @admin.display(description="agent / variant")
    def agent_variant(self, obj: Message) -> str:
        return answered_by(obj)

    @admin.display(description="tool calls")
    def tool_call_trace(self, obj: Message) -> SafeString:
        return tool_trace(obj)


class ApprovalStatusFilter(admin.SimpleListFilter):
    title = "decision"
    parameter_name = "decision"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(s.value, s.label) for s in ToolApproval.Status]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[ToolApproval]
    ) -> QuerySet[ToolApproval]:
        return queryset.filter(status=self.value()) if self.value() else queryset


@admin.register(ToolApproval)
class ToolApprovalAdmin(ReadOnlyModelAdmin):
    """Tool calls that wait for a person. Approving or rejecting here resumes the reply, as
    the API's decision does (the admin user is recorded as the one who decided)."""

    list_display = [
        "tool_name",
        "status",
        "conversation",
        "short_args",
        "decided_by",
        "decided_at",
        "created_at",
    ]
    list_filter = [ApprovalStatusFilter, "tool_name"]
    list_select_related = ["conversation", "decided_by"]
    search_fields = ["tool_name", "conversation__id", "conversation__title", "tool_call_id"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in ToolApproval._meta.fields]
    actions = ["approve", "reject"]

    @admin.display(description="args")
    def short_args(self, obj: ToolApproval) -> str:
        return json.dumps(obj.args)[:120]

    def _decide(
        self, request: HttpRequest, queryset: QuerySet[ToolApproval], decision: str
    ) -> None:
        done, refused = 0, []
        for approval in queryset.filter(status=ToolApproval.Status.PENDING):
            try:
                approval_decide(
                    user=request.user,  # type: ignore[arg-type]
                    conversation_id=approval.conversation_id,
                    approval_id=approval.pk,
                    decision=decision,
                    reason=f"{decision}d in the admin",
                )
                done += 1
            except ApplicationError as exc:
                refused.append(f"{approval.tool_name}: {exc.message}")
        self.message_user(request, f"{decision.capitalize()}d {done} call(s).", messages.SUCCESS)
        if refused:
            self.message_user(request, "; ".join(refused), messages.WARNING)

    @admin.action(description="Approve the selected pending calls (the replies resume)")
    def approve(self, request: HttpRequest, queryset: QuerySet[ToolApproval]) -> None:
        self._decide(request, queryset, "approve")

    @admin.action(description="Reject the selected pending calls (the model is told)")
    def reject(self, request: HttpRequest, queryset: QuerySet[ToolApproval]) -> None:
        self._decide(request, queryset, "reject")


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = ["model", "input_per_million", "output_per_million", "currency", "updated_at"]
    list_editable = ["input_per_million", "output_per_million"]
    list_filter = ["currency"]
    search_fields = ["model"]


admin.site.unregister(User)


@admin.register(User)
class UserUsageAdmin(UserAdmin):
    """The user list with each user's tokens and cost (accounts knows nothing of conversations)."""

    list_display = [*UserAdmin.list_display[:5], "tokens", "cost", *UserAdmin.list_display[5:]]

    def get_queryset(self, request: HttpRequest) -> QuerySet[User]:
        return super().get_queryset(request).annotate(**usage_by_owner())

    @admin.display(description="tokens", ordering="_tokens")
    def tokens(self, obj: Any) -> int:
        return obj._tokens

    @admin.display(description="cost", ordering="_cost")
    def cost(self, obj: Any) -> Decimal:
        return obj._cost
