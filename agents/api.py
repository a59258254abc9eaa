"""Agents API (DRF): CRUD, prompt history, the tool registry, routing a message, variants,
interactions and metrics."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from django.utils import timezone
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from agents.models import Agent, AgentInteraction, AgentPromptVersion, AgentVariant
from agents.selectors import (
    agent_list,
    agent_may_edit,
    agent_metrics,
    agent_prompt_history,
    interaction_list,
    variant_choice_list,
    variant_list,
)
from agents.services import (
    EDITABLE_FIELDS,
    agent_create,
    agent_delete,
    agent_route,
    agent_update,
    agent_validate,
    variant_create,
    variant_delete,
    variant_update,
)
from agents.specs import model_spec_pattern
from agents.tools import tool_list
from agents.tools.registry import tool_describe
from agents.types import agent_types
from core.errors import ApplicationError, Forbidden, NotFound
from core.validation import (
    InvalidInput,
    RejectUnknownFields,
    StrictCharField,
    StrictFloatField,
    StrictIntegerField,
    StrictMessageContentField,
    StrictTextField,
    require_json_body,
)
from knowledge.schema import MetadataFilterField
from web.http_policy import route_policy

SLUG_PATTERN = r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$"


def _slug_exact(value: str) -> str:
    # As sent: a slug is an identifier, so nothing is stripped or normalized into one.
    if not re.match(SLUG_PATTERN, value):
        raise InvalidInput("Use lowercase letters, digits and single - or _ between them.")
    return value


class StrictSlugField(StrictCharField):
    rule = staticmethod(_slug_exact)
    visible = SLUG_PATTERN  # the schema's pattern

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)


class StrictBooleanField(serializers.BooleanField):
    """JSON true/false only: DRF's own would read "yes", 1 and "on" as true."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class ModelSpecField(StrictCharField):
    """`provider:model`; the service checks it (grammar and provider)."""


class ModelSpecFieldSchema(OpenApiSerializerFieldExtension):
    target_class = ModelSpecField

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        if direction != "request":
            return schema
        if "oneOf" in schema:  # allow_blank: [the spec, ""]
            first, *rest = schema["oneOf"]
            return {**schema, "oneOf": [{**first, "pattern": model_spec_pattern()}, *rest]}
        return {**schema, "pattern": model_spec_pattern()}


class ToolNameField(StrictCharField):
    """A tool's name; the schema lists the registry's (MCP tools join as servers are added)."""


class ToolNameFieldSchema(OpenApiSerializerFieldExtension):
    target_class = ToolNameField

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        return {"type": "string", "enum": sorted(spec.name for spec in tool_list())}


class ToolNamesField(serializers.ListField):
    """The agent's tools: each named once."""


class ToolNamesFieldSchema(OpenApiSerializerFieldExtension):
    target_class = ToolNamesField

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        return {**schema, "uniqueItems": True}


def _type_choices() -> list[tuple[str, str]]:
    return sorted(agent_types().items())


# One choice set for `type` and `preferred_type` (named AgentTypeEnum in the schema).
AGENT_TYPE_CHOICES = _type_choices()


class CapabilitySerializer(RejectUnknownFields, serializers.Serializer):
    name = StrictCharField(max_length=100)
    description = StrictTextField(max_length=2000)


class AgentSerializer(RejectUnknownFields, serializers.ModelSerializer):
    name = StrictCharField(max_length=200)
    slug = StrictSlugField(max_length=64)
    type = serializers.ChoiceField(
        choices=AGENT_TYPE_CHOICES,
        required=False,
        help_text="conversational, task_oriented, or a type a plugin registered.",
    )
    description = StrictTextField(required=False, allow_blank=True, max_length=10_000)
    system_prompt = StrictTextField(
        required=False,
        allow_blank=True,
        max_length=20_000,
        help_text="Every change is kept: GET prompt-history/.",
    )
    model = ModelSpecField(
        required=False,
        allow_blank=True,
        max_length=200,
        help_text="provider:model (e.g. openai:gpt-4o-mini); empty: the deployment's default.",
    )
    temperature = StrictFloatField(required=False, allow_null=True, min_value=0, max_value=2)
    max_tokens = StrictIntegerField(required=False, allow_null=True, min_value=1, max_value=200_000)
    fallback_model = ModelSpecField(
        required=False,
        allow_blank=True,
        max_length=200,
        help_text="Used when the primary model fails or times out.",
    )
    capabilities = CapabilitySerializer(many=True, required=False, max_length=50)
    tools = ToolNamesField(
        child=ToolNameField(max_length=200),
        required=False,
        max_length=50,
        help_text="Tool names: GET /api/v1/agents/tools/.",
    )
    knowledge_filter = MetadataFilterField(
        required=False,
        help_text="A metadata filter over the owner's documents (knowledge search's grammar); "
        "{} for all of them.",
    )
    status = serializers.ChoiceField(choices=Agent.Status.choices, required=False)
    shared = StrictBooleanField(
        required=False,
        default=False,
        help_text="Staff only, on create: an agent every user may use (it has no owner).",
    )
    owner = serializers.CharField(source="owner.username", read_only=True, allow_null=True)

    def to_internal_value(self, data: Any) -> Any:
        # One 400 names every bad field: unknown fields, the serializer's own rules and the
        # service's domain rules (models, tools, capabilities, knowledge scope) together.
        # When the serializer's rules pass, the service checks the domain rules itself.
        if not isinstance(data, Mapping):
            return super().to_internal_value(data)
        problems: dict[str, Any] = {k: ["Unknown field."] for k in data if k not in self.fields}
        known = {k: v for k, v in data.items() if k in self.fields}
        try:
            value = serializers.ModelSerializer.to_internal_value(self, known)
        except serializers.ValidationError as exc:
            if not isinstance(exc.detail, Mapping):
                raise
            problems.update(exc.detail)
        else:
            if not problems:
                return value
        domain: dict[str, Any] = {}
        for name in DOMAIN_CHECKED_FIELDS:
            if name in known and name not in problems:
                try:
                    domain[name] = self.fields[name].run_validation(known[name])
                except serializers.ValidationError:
                    continue
        try:
            agent_validate(domain)
        except ApplicationError as exc:
            if isinstance(exc.details, Mapping):
                problems.update(exc.details)
        raise serializers.ValidationError(problems)

    class Meta:
        model = Agent
        # What clients may change is the service's list (EDITABLE_FIELDS); the rest is read.
        fields = ["id", *EDITABLE_FIELDS, "shared", "owner", "created_at", "updated_at"]
        read_only_fields = ["id", "owner", "created_at", "updated_at"]


# The fields whose rules the service holds (agents.services.agent_validate).
DOMAIN_CHECKED_FIELDS = (
    "type",
    "model",
    "fallback_model",
    "capabilities",
    "tools",
    "knowledge_filter",
)


class PromptVersionSerializer(serializers.ModelSerializer):
    author = serializers.CharField(source="author.username", read_only=True, allow_null=True)

    class Meta:
        model = AgentPromptVersion
        fields = ["version", "system_prompt", "author", "created_at"]
        read_only_fields = fields


class RouteSerializer(RejectUnknownFields, serializers.Serializer):
    message = StrictMessageContentField()
    preferred_type = serializers.ChoiceField(
        choices=AGENT_TYPE_CHOICES,
        required=False,
        help_text="Only agents of this type are candidates.",
    )


class _AgentRef(serializers.Serializer):
    id = serializers.UUIDField()
    slug = serializers.CharField()
    name = serializers.CharField()
    type = serializers.CharField()


RouteResponse = inline_serializer(
    "AgentRoute",
    {
        "agent": _AgentRef(allow_null=True, help_text="The best candidate (null: none)."),
        "candidates": inline_serializer(
            "AgentRouteCandidate",
            {
                "agent": _AgentRef(),
                "score": serializers.FloatField(
                    help_text="similarity * (0.5 + performance); candidates come best first."
                ),
                "similarity": serializers.FloatField(
                    help_text="The best cosine similarity of the message to a capability."
                ),
                "performance": serializers.FloatField(
                    help_text="Posterior mean reward of the agent's feedback; 0.5 with none."
                ),
                "feedback_count": serializers.IntegerField(),
            },
            many=True,
        ),
    },
)

ToolResponse = inline_serializer(
    "AgentTool",
    {
        "name": serializers.CharField(),
        "description": serializers.CharField(),
        "requires_approval": serializers.BooleanField(),
        "source": serializers.CharField(),
    },
    many=True,
)


def _agent_ref(agent: Agent) -> dict[str, Any]:
    return {"id": str(agent.pk), "slug": agent.slug, "name": agent.name, "type": agent.type}


# --- variants, interactions, metrics ----------------------------------------------------------
class VariantParametersSerializer(RejectUnknownFields, serializers.Serializer):
    """Overrides of the agent's model settings."""

    model = ModelSpecField(
        required=False, max_length=200, help_text="provider:model, instead of the agent's."
    )
    temperature = StrictFloatField(required=False, min_value=0, max_value=2)
    max_tokens = StrictIntegerField(required=False, min_value=1, max_value=200_000)


class AgentVariantSerializer(RejectUnknownFields, serializers.ModelSerializer):
    name = StrictCharField(max_length=100, help_text="Unique within the agent; fixed once made.")
    system_prompt = StrictTextField(
        required=False,
        allow_blank=True,
        max_length=20_000,
        help_text="Empty: the agent's own prompt.",
    )
    # No help_text: the schema then refers to the closed component directly (its docstring
    # describes it), and web.schema_rules closes it (additionalProperties: false).
    parameters = VariantParametersSerializer(required=False)
    active = StrictBooleanField(
        required=False, default=True, help_text="Only active variants are chosen."
    )
    posterior_mean = serializers.FloatField(
        read_only=True, help_text="alpha / (alpha + beta): the expected reward."
    )

    class Meta:
        model = AgentVariant
        fields = [
            "id",
            "name",
            "system_prompt",
            "parameters",
            "active",
            "alpha",
            "beta",
            "posterior_mean",
            "feedback_count",
            "reward_sum",
            "created_at",
        ]
        read_only_fields = ["id", "alpha", "beta", "feedback_count", "reward_sum", "created_at"]
        extra_kwargs = {
            "alpha": {"help_text": "Beta posterior: 1 + the sum of rewards."},
            "beta": {"help_text": "Beta posterior: 1 + the sum of (1 - reward)."},
        }


class AgentVariantUpdateSerializer(AgentVariantSerializer):
    name = serializers.CharField(read_only=True)

    def to_internal_value(self, data: Any) -> Any:
        if (
            isinstance(data, Mapping)
            and "name" in data
            and self.instance is not None
            and data["name"] != self.instance.name
        ):
            raise serializers.ValidationError({"name": ["A variant's name cannot be changed."]})
        return super().to_internal_value(data)


class VariantChoiceSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    variant = serializers.CharField(source="variant.name")
    variant_id = serializers.UUIDField()
    sample = serializers.FloatField(help_text="The chosen variant's draw from its posterior.")
    samples = serializers.DictField(
        child=serializers.FloatField(), help_text="Every active variant's draw: {name: value}."
    )
    reward = serializers.FloatField(allow_null=True, help_text="Its feedback, once rated.")
    rewarded_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()


class ToolCallTraceSerializer(serializers.Serializer):
    id = serializers.CharField(required=False)
    name = serializers.CharField(required=False)
    args = serializers.JSONField(required=False)
    result = serializers.CharField(required=False, help_text="An excerpt (2,000 characters).")
    latency_ms = serializers.IntegerField(required=False, allow_null=True)
    error = serializers.CharField(required=False, allow_null=True)
    approval = serializers.JSONField(required=False, allow_null=True)


class AgentInteractionSerializer(serializers.ModelSerializer):
    variant = serializers.CharField(source="variant.name", allow_null=True, default=None)
    tool_calls = serializers.SerializerMethodField(help_text="In call order, as recorded.")
    user = serializers.CharField(source="user.username", allow_null=True, default=None)

    @extend_schema_field(ToolCallTraceSerializer(many=True))
    def get_tool_calls(self, interaction: AgentInteraction) -> list[dict[str, Any]]:
        return list(interaction.tool_calls)

    class Meta:
        model = AgentInteraction
        fields = [
            "id",
            "source",
            "conversation_id",
            "message_id",
            "user",
            "variant",
            "variant_id",
            "model_used",
            "latency_ms",
            "tokens_in",
            "tokens_out",
            "tool_call_count",
            "tool_calls",
            "error",
            "confidence",
            "confidence_method",
            "feedback_reward",
            "feedback_at",
            "created_at",
        ]
        read_only_fields = fields


# <n>d for 1-366 days or <n>h for 1-8784 hours, exactly: the schema states the bound too.
_DAYS = r"(?:[1-9]|[1-9][0-9]|[12][0-9]{2}|3[0-5][0-9]|36[0-6])d"
_HOURS = r"(?:[1-9]|[1-9][0-9]|[1-9][0-9]{2}|[1-7][0-9]{3}|8[0-6][0-9]{2}|87[0-7][0-9]|878[0-4])h"
WINDOW_PATTERN = rf"^(?:{_DAYS}|{_HOURS})$"
DEFAULT_WINDOW = "7d"


class WindowField(StrictCharField):
    """A length of time back from ``until``: <n>h or <n>d, up to 366 days."""


class DateOrDateTimeField(serializers.DateTimeField):
    """An ISO 8601 datetime (naive: UTC) within what PostgreSQL and Python both represent."""

    default_error_messages = {"out_of_range": "Use a time from 0001-01-02 to 9999-12-30."}

    def to_internal_value(self, value: Any) -> dt.datetime:
        moment = super().to_internal_value(value)
        try:
            moment.astimezone(dt.UTC) + dt.timedelta(days=1)
            moment.astimezone(dt.UTC) - dt.timedelta(days=1)
        except OverflowError:
            self.fail("out_of_range")
        return moment


class MetricsQuerySerializer(RejectUnknownFields, serializers.Serializer):
    window = WindowField(
        required=False,
        max_length=5,
        help_text="How far back from until: <n>h or <n>d (24h, 7d, 30d), up to 366d; "
        "default 7d. Not with since.",
    )
    since = DateOrDateTimeField(
        required=False, help_text="ISO 8601; naive times are UTC. Not with window."
    )
    until = DateOrDateTimeField(required=False, help_text="ISO 8601; default: now.")

    def validate_window(self, value: str) -> dt.timedelta:
        if not re.fullmatch(WINDOW_PATTERN, value):
            raise serializers.ValidationError(
                "Use <n>h or <n>d, e.g. 24h, 7d, 30d: at most 366d (8784h)."
            )
        amount, unit = int(value[:-1]), value[-1]
        return dt.timedelta(hours=amount) if unit == "h" else dt.timedelta(days=amount)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "window" in attrs and "since" in attrs:
            raise serializers.ValidationError(
                {"window": ["Give window or since, not both."], "since": ["Not with window."]}
            )
        until = attrs.get("until") or timezone.now()
        try:
            since = attrs.get("since") or until - attrs.get(
                "window", self.validate_window(DEFAULT_WINDOW)
            )
        except OverflowError as exc:
            raise serializers.ValidationError({"until": ["Too early for this window."]}) from exc
        if since >= until:
            raise serializers.ValidationError({"since": ["since must be before until."]})
        return {"since": since, "until": until}


_METRIC_BLOCK = {
    "replies": serializers.IntegerField(),
    "errors": serializers.IntegerField(help_text="Replies that ended in an error."),
    "error_rate": serializers.FloatField(allow_null=True, help_text="errors / replies."),
    "latency_ms": inline_serializer(
        "AgentMetricsLatency",
        {
            "p50": serializers.FloatField(allow_null=True),
            "p95": serializers.FloatField(allow_null=True),
            "mean": serializers.FloatField(allow_null=True),
            "measured": serializers.IntegerField(help_text="Replies with a latency."),
        },
    ),
    "tokens": inline_serializer(
        "AgentMetricsTokens",
        {
            "mean_in": serializers.FloatField(allow_null=True),
            "mean_out": serializers.FloatField(allow_null=True),
            "mean_total": serializers.FloatField(allow_null=True),
        },
    ),
    "feedback": inline_serializer(
        "AgentMetricsFeedback",
        {
            "count": serializers.IntegerField(help_text="Rated replies."),
            "mean": serializers.FloatField(
                allow_null=True, help_text="Mean reward in [0, 1] (thumbs -1/0/1: 0/0.5/1)."
            ),
        },
    ),
    "tool_calls": inline_serializer(
        "AgentMetricsToolCalls",
        {
            "replies_with_calls": serializers.IntegerField(),
            "rate": serializers.FloatField(
                allow_null=True, help_text="Share of replies with at least one tool call."
            ),
            "mean_per_reply": serializers.FloatField(allow_null=True),
        },
    ),
    "confidence": inline_serializer(
        "AgentMetricsConfidence",
        {
            "count": serializers.IntegerField(help_text="Replies whose confidence was measured."),
            "mean": serializers.FloatField(allow_null=True),
        },
    ),
}

MetricsResponse = inline_serializer(
    "AgentMetrics",
    {
        "since": serializers.DateTimeField(),
        "until": serializers.DateTimeField(),
        **_METRIC_BLOCK,
        "models": inline_serializer(
            "AgentMetricsModel",
            {"model": serializers.CharField(), "replies": serializers.IntegerField()},
            many=True,
            help_text="The models that actually answered (a fallback's when it did).",
        ),
        "variants": inline_serializer(
            "AgentMetricsVariant",
            {
                "id": serializers.UUIDField(),
                "name": serializers.CharField(),
                "active": serializers.BooleanField(),
                "alpha": serializers.FloatField(),
                "beta": serializers.FloatField(),
                "posterior_mean": serializers.FloatField(),
                **_METRIC_BLOCK,
            },
            many=True,
        ),
    },
)


class AgentViewSet(viewsets.ModelViewSet):
    """Your agents and the shared ones (staff: every agent). Others' agents are 404."""

    serializer_class = AgentSerializer
    parser_classes = [JSONParser]
    lookup_value_converter = "uuid"
    http_method_names = ["get", "post", "patch", "put", "delete"]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if request.method in ("POST", "PUT", "PATCH") and self.action is not None:
            require_json_body(request)

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return Agent.objects.none()
        return agent_list(user=self.request.user)

    def perform_create(self, serializer: AgentSerializer) -> None:
        data = serializer.validated_data
        fields = {k: v for k, v in data.items() if k in EDITABLE_FIELDS}
        serializer.instance = agent_create(
            actor=self.request.user, shared=data.get("shared", False), **fields
        )

    def perform_update(self, serializer: AgentSerializer) -> None:
        fields = {k: v for k, v in serializer.validated_data.items() if k in EDITABLE_FIELDS}
        serializer.instance = agent_update(
            agent=serializer.instance, actor=self.request.user, **fields
        )

    def perform_destroy(self, instance: Agent) -> None:
        agent_delete(agent=instance, actor=self.request.user)

    @extend_schema(responses={200: PromptVersionSerializer(many=True)})
    @action(detail=True, methods=["get"], url_path="prompt-history")
    def prompt_history(self, request: Request, pk: str | None = None) -> Response:
        """Every system prompt this agent has had, newest first: who set it and when."""
        page = self.paginate_queryset(agent_prompt_history(agent=self.get_object()))
        return self.get_paginated_response(PromptVersionSerializer(page, many=True).data)

    @extend_schema(responses={200: ToolResponse}, description="Not paginated: the registry.")
    @action(detail=False, methods=["get"], pagination_class=None)
    def tools(self, request: Request) -> Response:
        """The tools agents may name, from the tool registry."""
        return Response([tool_describe(spec) for spec in tool_list()])

    @extend_schema(
        request=RouteSerializer,
        responses={200: RouteResponse},
        description="Scores every active agent you may use (yours and the shared ones) by "
        "the similarity of the message to its capabilities, weighted by its measured "
        "performance; every candidate is listed, best first. Rate limited as expensive.",
    )
    @action(detail=False, methods=["post"])
    @route_policy(rate="expensive")
    def route(self, request: Request) -> Response:
        """Which agent should answer this message?"""
        payload = RouteSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        candidates = agent_route(
            user=request.user,
            message=payload.validated_data["message"],
            preferred_type=payload.validated_data.get("preferred_type"),
        )
        return Response(
            {
                "agent": _agent_ref(candidates[0].agent) if candidates else None,
                "candidates": [
                    {
                        "agent": _agent_ref(candidate.agent),
                        "score": round(candidate.score, 6),
                        "similarity": round(candidate.similarity, 6),
                        "performance": round(candidate.performance.mean, 6),
                        "feedback_count": candidate.performance.feedback,
                    }
                    for candidate in candidates
                ],
            }
        )

    @extend_schema(
        responses={
            200: inline_serializer(
                "AgentTypes",
                {"name": serializers.CharField(), "description": serializers.CharField()},
                many=True,
            )
        }
    )
    @action(detail=False, methods=["get"], pagination_class=None)
    def types(self, request: Request) -> Response:
        """The agent types: the built-in ones and those plugins registered."""
        return Response(
            [{"name": name, "description": text} for name, text in sorted(agent_types().items())]
        )

    # --- variants ------------------------------------------------------------------------------
    def _editable(self, request: Request, agent: Agent) -> None:
        if not agent_may_edit(agent=agent, user=request.user):
            raise Forbidden("Only the agent's owner (staff, for a shared agent) changes this.")

    @extend_schema(
        methods=["GET"],
        responses={200: AgentVariantSerializer(many=True)},
        description="The agent's variants with their posteriors, by name.",
    )
    @extend_schema(
        methods=["POST"],
        request=AgentVariantSerializer,
        responses={201: AgentVariantSerializer},
        description="A new variant, posterior Beta(1, 1). Only the agent's owner, or staff "
        "(the only editors of a shared agent), add one: others get 403.",
    )
    @action(detail=True, methods=["get", "post"])
    def variants(self, request: Request, pk: str | None = None) -> Response:
        """The variants Thompson sampling chooses between."""
        agent = self.get_object()
        if request.method == "GET":
            page = self.paginate_queryset(variant_list(agent=agent))
            return self.get_paginated_response(AgentVariantSerializer(page, many=True).data)
        self._editable(request, agent)
        payload = AgentVariantSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        variant = variant_create(
            agent=agent,
            name=data["name"],
            system_prompt=data.get("system_prompt", ""),
            parameters=data.get("parameters") or {},
            active=data.get("active", True),
            actor=request.user,
        )
        return Response(AgentVariantSerializer(variant).data, status=status.HTTP_201_CREATED)

    def _variant(self, agent: Agent, variant_id: Any) -> AgentVariant:
        variant = variant_list(agent=agent).filter(pk=variant_id).first()
        if variant is None:
            raise NotFound("Not found.")
        return variant

    @extend_schema(methods=["GET"], responses={200: AgentVariantSerializer})
    @extend_schema(
        methods=["PATCH"],
        request=AgentVariantUpdateSerializer(partial=True),
        responses={200: AgentVariantSerializer},
        description="Change the prompt, the overrides or whether it is chosen; the name and "
        "the posterior stay. Owner or staff only (403 for others).",
    )
    @extend_schema(
        methods=["DELETE"],
        responses={204: None},
        description="Only a variant never chosen is deleted; one with choices keeps its "
        "history (409 variant_has_history): PATCH active: false instead.",
    )
    @action(
        detail=True,
        methods=["get", "patch", "delete"],
        url_path="variants/<uuid:variant_id>",
        url_name="variant-detail",
    )
    def variant(self, request: Request, pk: str | None = None, variant_id: Any = None) -> Response:
        """One variant of the agent."""
        agent = self.get_object()
        variant = self._variant(agent, variant_id)
        if request.method == "GET":
            return Response(AgentVariantSerializer(variant).data)
        self._editable(request, agent)
        if request.method == "DELETE":
            variant_delete(variant=variant, actor=request.user)
            return Response(status=status.HTTP_204_NO_CONTENT)
        payload = AgentVariantUpdateSerializer(variant, data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        variant = variant_update(
            variant=variant,
            system_prompt=data.get("system_prompt"),
            parameters=data.get("parameters"),
            active=data.get("active"),
            actor=request.user,
        )
        return Response(AgentVariantSerializer(variant).data)

    @extend_schema(
        responses={200: VariantChoiceSerializer(many=True)},
        description="Every Thompson-sampling pick, newest first, with every variant's draw "
        "and the reward it got. The agent's owner or staff only (403 for others).",
    )
    @action(detail=True, methods=["get"], url_path="variant-choices")
    def variant_choices(self, request: Request, pk: str | None = None) -> Response:
        """The record of the agent's variant choices."""
        agent = self.get_object()
        self._editable(request, agent)
        page = self.paginate_queryset(variant_choice_list(agent=agent))
        return self.get_paginated_response(VariantChoiceSerializer(page, many=True).data)

    # --- interactions and metrics ------------------------------------------------------------
    @extend_schema(
        responses={200: AgentInteractionSerializer(many=True)},
        description="The agent's replies, newest first, with their tool-call traces. Its "
        "owner and staff see every reply; a user of a shared agent sees the replies given "
        "to them.",
    )
    @action(detail=True, methods=["get"])
    def interactions(self, request: Request, pk: str | None = None) -> Response:
        """What the agent replied: latency, tokens, tools, model, confidence, feedback."""
        rows = interaction_list(agent=self.get_object(), user=request.user)
        page = self.paginate_queryset(rows.select_related("user"))
        return self.get_paginated_response(AgentInteractionSerializer(page, many=True).data)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "window",
                OpenApiTypes.STR,
                pattern=WINDOW_PATTERN,
                description="<n>h or <n>d back from until (24h, 7d, 30d; at most 366d); "
                "default 7d. Not with since.",
            ),
            OpenApiParameter("since", OpenApiTypes.DATETIME, description="ISO 8601 (naive: UTC)."),
            OpenApiParameter("until", OpenApiTypes.DATETIME, description="ISO 8601; default: now."),
        ],
        responses={200: MetricsResponse},
        description="Aggregates over the agent's replies created in [since, until), computed "
        "in PostgreSQL: replies, error rate, latency p50/p95 (percentile_cont) and mean, "
        "mean tokens, feedback (the rated replies' mean reward in [0, 1]), tool-call rate "
        "and calls per reply, measured confidence, the models that answered, and the same "
        "per variant with its posterior. A bad window is a 400.",
    )
    @action(detail=True, methods=["get"])
    def metrics(self, request: Request, pk: str | None = None) -> Response:
        """How the agent has done over a window of time."""
        agent = self.get_object()
        # A plain dict: DRF reads an empty form value of an optional field as "not given",
        # and `?window=` must be the 400 the schema's pattern promises, not the default.
        query = MetricsQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        return Response(agent_metrics(agent=agent, **query.validated_data))
