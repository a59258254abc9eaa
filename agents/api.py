"""Agents API (DRF): CRUD, prompt history, the tool registry, routing a message."""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from agents.models import Agent, AgentPromptVersion
from agents.selectors import agent_list, agent_prompt_history
from agents.services import EDITABLE_FIELDS, agent_create, agent_delete, agent_route, agent_update
from agents.specs import model_spec_pattern
from agents.tools import tool_list
from agents.tools.registry import tool_describe
from agents.types import agent_types
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

    class Meta:
        model = Agent
        # What clients may change is the service's list (EDITABLE_FIELDS); the rest is read.
        fields = ["id", *EDITABLE_FIELDS, "shared", "owner", "created_at", "updated_at"]
        read_only_fields = ["id", "owner", "created_at", "updated_at"]


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
