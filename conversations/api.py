"""Conversations API: resources on DRF, the token stream on Ninja (async)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any
from uuid import UUID

from django.conf import settings
from django.http import HttpRequest, StreamingHttpResponse
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from ninja import Router, Schema
from pydantic import AfterValidator, Field, StrictStr
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import PydanticCustomError
from rest_framework import generics, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import NinjaApiKeyAuth, NinjaStaffSessionAuth
from conversations.models import (
    SETTING_RANGES,
    SYSTEM_PROMPT_MAX_CHARS,
    Conversation,
    Message,
    ToolApproval,
)
from conversations.pricing import format_cost
from conversations.schema import ModelSpecField
from conversations.selectors import (
    approval_list,
    conversation_list,
    message_list,
    message_visible,
    usage_for,
)
from conversations.services import (
    EDITABLE_FIELDS,
    ApprovalRequired,
    Token,
    ToolCallFinished,
    ToolCallStarted,
    TurnEvent,
    TurnFinished,
    TurnStarted,
    approval_decide,
    conversation_branch,
    conversation_create,
    conversation_delete,
    conversation_fork,
    conversation_update,
    message_feedback,
    message_send,
    message_stream,
)
from conversations.workflows import MAX_NAME_LENGTH as MAX_WORKFLOW_NAME
from conversations.workflows import workflow_names
from core.errors import ApplicationError, NotFound, error_payload
from core.validation import (
    MESSAGE_CONTENT_PATTERN,
    InvalidInput,
    MetadataField,
    RejectUnknownFields,
    StrictCharField,
    StrictFloatField,
    StrictIntegerField,
    StrictMessageContentField,
    StrictTextField,
    require_json_body,
    validate_message_content,
)
from web.exception_handlers import ninja_field_errors
from web.http_policy import route_policy

COST_HELP = (
    "In the price's currency, six decimals; null when a price is unknown (the model is "
    "neither in the admin's price table nor in the price database)."
)


def _content_rule(value: str) -> str:
    try:
        return validate_message_content(value)
    except InvalidInput as exc:  # the rule's own words, without pydantic's "Value error, "
        raise PydanticCustomError("invalid_content", str(exc)) from exc


class MessageIn(Schema):
    """A message to send: the one rule both send endpoints (JSON and stream) validate with."""

    model_config = {"extra": "forbid"}  # a misspelt field is a 400, not a silent drop

    content: Annotated[
        StrictStr,
        AfterValidator(_content_rule),
        Field(
            description="The message, stored exactly as sent: not blank, no NUL characters.",
            json_schema_extra={
                "minLength": 1,
                "maxLength": settings.CHATTER_MAX_MESSAGE_CHARS,
                "pattern": MESSAGE_CONTENT_PATTERN,
            },
        ),
    ]


def message_input(data: Any) -> MessageIn:
    """Validate a send request's body, worded as Ninja words the stream's errors."""
    try:
        return MessageIn.model_validate(data)
    except PydanticValidationError as exc:
        raise ApplicationError(
            "Invalid input.", code="validation_error", details=ninja_field_errors(exc.errors())
        ) from exc


class WorkflowField(StrictCharField):
    """A workflow type: a built-in one or a plugin's (checked by the service)."""


class WorkflowFieldSchema(OpenApiSerializerFieldExtension):
    target_class = WorkflowField

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        return {
            "type": "string",
            "enum": workflow_names(),
            "description": "basic, rag or agent, or a workflow an enabled plugin adds.",
        }


def _bounds(name: str) -> dict[str, int]:
    low, high = SETTING_RANGES[name]
    return {"min_value": low, "max_value": high}


class ConversationSerializer(RejectUnknownFields, serializers.ModelSerializer):
    # The bounds are the model's (SETTING_RANGES), declared here too for the schema.
    temperature = StrictFloatField(required=False, allow_null=True, **_bounds("temperature"))
    max_tokens = StrictIntegerField(required=False, allow_null=True, **_bounds("max_tokens"))
    memory_window = StrictIntegerField(required=False, allow_null=True, **_bounds("memory_window"))
    relevance_floor = StrictFloatField(
        required=False,
        allow_null=True,
        **_bounds("relevance_floor"),
        help_text="rag: the least cosine similarity a passage needs to reach the model "
        "(null: the deployment's CHATTER_RAG_RELEVANCE_FLOOR).",
    )
    metadata = MetadataField(required=False)
    workflow = WorkflowField(required=False, max_length=MAX_WORKFLOW_NAME)
    title = StrictTextField(required=False, allow_blank=True, max_length=300)
    model = ModelSpecField(required=False, allow_blank=True, max_length=200)
    system_prompt = StrictTextField(
        required=False, allow_blank=True, max_length=SYSTEM_PROMPT_MAX_CHARS
    )
    agent = StrictCharField(
        source="agent_ref",
        required=False,
        allow_null=True,
        allow_blank=True,
        max_length=200,
        help_text="An agent you may use (its id or slug; your own before a shared one of the "
        "same slug), or `auto`: the first message is routed to the best agent "
        "(agents/route/), which the conversation is then bound to. Its turns use the agent's "
        "prompt, model, tools, knowledge scope and variants (workflow `agent`). Null or "
        "blank: no agent. In responses: the bound agent's id, `auto` until routed, or null.",
    )

    class Meta:
        model = Conversation
        fields = [
            "id",
            "title",
            "agent",
            "workflow",
            "model",
            "temperature",
            "max_tokens",
            "system_prompt",
            "memory_window",
            "relevance_floor",
            "metadata",
            "parent",
            "branch_point",
            "forked_from",
            "summary",
            "summarized_messages",
            "message_count",
            "tokens_in",
            "tokens_out",
            "cost",
            "created_at",
            "updated_at",
        ]
        # Clients set what the service lets them change; lineage, memory and totals are derived.
        read_only_fields = [name for name in fields if name not in EDITABLE_FIELDS]


class FeedbackField(serializers.Serializer):
    scale = serializers.ChoiceField(choices=Message.FeedbackScale.choices, allow_null=True)
    rating = serializers.IntegerField(allow_null=True)
    comment = serializers.CharField(allow_blank=True)
    at = serializers.DateTimeField(allow_null=True)


class AgentShortSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    slug = serializers.CharField()
    name = serializers.CharField()


class VariantShortSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    choice_id = serializers.IntegerField()


class MessageSerializer(serializers.ModelSerializer):
    feedback = serializers.SerializerMethodField()
    agent = serializers.SerializerMethodField(
        help_text="The agent that answered (replies of agent conversations), else null."
    )
    variant = serializers.SerializerMethodField(
        help_text="The agent's variant chosen for this reply (Thompson sampling), else null."
    )

    class Meta:
        model = Message
        fields = [
            "id",
            "position",
            "role",
            "content",
            "status",
            "error",
            "model",
            "tokens_in",
            "tokens_out",
            "cost",
            "latency_ms",
            "tool_calls",
            "agent",
            "variant",
            "metadata",
            "feedback",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(AgentShortSerializer(allow_null=True))
    def get_agent(self, message: Message) -> dict[str, Any] | None:
        return message.metadata.get("agent")

    @extend_schema_field(VariantShortSerializer(allow_null=True))
    def get_variant(self, message: Message) -> dict[str, Any] | None:
        return message.metadata.get("variant")

    @extend_schema_field(FeedbackField(allow_null=True))
    def get_feedback(self, message: Message) -> dict[str, Any] | None:
        if message.feedback_rating is None:
            return None
        return {
            "scale": message.feedback_scale or None,  # None: rated before scales were named
            "rating": message.feedback_rating,
            "comment": message.feedback_comment,
            "at": message.feedback_at,
        }


class TurnSerializer(serializers.Serializer):
    user_message = MessageSerializer()
    assistant_message = MessageSerializer()


class ToolApprovalSerializer(serializers.ModelSerializer):
    decided_by = serializers.SlugRelatedField(
        slug_field="username",
        read_only=True,
        allow_null=True,
        help_text="Who decided; null while the call is pending.",
    )

    class Meta:
        model = ToolApproval
        fields = [
            "id",
            "conversation",
            "message",
            "tool_call_id",
            "tool_name",
            "args",
            "status",
            "decided_by",
            "decided_at",
            "reason",
            "created_at",
        ]
        read_only_fields = fields


class ApprovalDecisionSerializer(RejectUnknownFields, serializers.Serializer):
    decision = serializers.ChoiceField(choices=["approve", "reject"])
    reason = StrictTextField(
        required=False,
        allow_blank=True,
        max_length=2000,
        default="",
        help_text="Why; a rejection's reason is handed to the model with the refusal.",
    )


class ApprovalOutcomeSerializer(serializers.Serializer):
    approval = ToolApprovalSerializer()
    assistant_message = MessageSerializer()


class BranchSerializer(RejectUnknownFields, serializers.Serializer):
    message_id = serializers.UUIDField()
    content = StrictMessageContentField(
        required=False,
        help_text="At a user message only: its edited text, sent as the branch's next turn "
        "(default: the message as it was).",
    )


class FeedbackSerializer(RejectUnknownFields, serializers.Serializer):
    scale = serializers.ChoiceField(
        choices=Message.FeedbackScale.choices,
        required=False,
        help_text="`thumbs`: rating -1 (down), 0 (neutral) or 1 (up); `stars`: rating 1 to 5. "
        "May be left out when the rating says it (-1 and 0 are thumbs, 2 to 5 stars); a "
        "rating of 1 without a scale is refused (a thumbs-up or one star?).",
    )
    rating = StrictIntegerField(min_value=-1, max_value=5)
    comment = StrictTextField(required=False, allow_blank=True, max_length=4000, default="")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # v1 clients sent {rating} alone: keep every rating that can only mean one thing.
        if "scale" not in attrs:
            rating = attrs["rating"]
            if rating == 1:
                raise serializers.ValidationError(
                    {"scale": ["Say which scale a rating of 1 is on: thumbs (up) or stars (one)."]}
                )
            attrs["scale"] = (
                Message.FeedbackScale.THUMBS if rating <= 0 else Message.FeedbackScale.STARS
            )
        return attrs


class ConversationViewSet(viewsets.ModelViewSet):
    """Your conversations (staff: everyone's). `?q=` searches titles and messages."""

    serializer_class = ConversationSerializer
    # JSON only, as documented: form encodings can't tell a number from a string.
    parser_classes = [JSONParser]
    lookup_value_converter = "uuid"
    http_method_names = ["get", "post", "patch", "put", "delete"]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        # fork takes no body; an undeclared method (no action) is left to answer 405.
        if request.method in ("POST", "PUT", "PATCH") and self.action not in (None, "fork"):
            require_json_body(request)

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return Conversation.objects.none()
        return conversation_list(user=self.request.user, query=self.request.query_params.get("q"))

    @extend_schema(parameters=[OpenApiParameter("q", str, description="Full-text search")])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    def perform_create(self, serializer: ConversationSerializer) -> None:
        fields = {k: v for k, v in serializer.validated_data.items() if k in EDITABLE_FIELDS}
        serializer.instance = conversation_create(
            owner=self.request.user, agent=serializer.validated_data.get("agent_ref"), **fields
        )

    def perform_update(self, serializer: ConversationSerializer) -> None:
        fields = {k: v for k, v in serializer.validated_data.items() if k in EDITABLE_FIELDS}
        if "agent_ref" in serializer.validated_data:
            fields["agent"] = serializer.validated_data["agent_ref"]
        serializer.instance = conversation_update(conversation=serializer.instance, **fields)

    def perform_destroy(self, instance: Conversation) -> None:
        conversation_delete(conversation=instance)

    @extend_schema(
        methods=["GET"],
        responses={200: MessageSerializer(many=True)},
        summary="The messages, in order",
    )
    @extend_schema(
        methods=["POST"],
        request=MessageIn,
        responses={201: TurnSerializer},
        summary="Send a message; returns it and the assistant's reply",
        description="409 while another reply in this conversation is running; 502/503 when "
        "the model provider fails (the user's message and the failed reply are kept).",
    )
    @action(detail=True, methods=["get", "post"])
    @route_policy(rate="expensive", methods=["POST"])
    def messages(self, request: Request, pk: str | None = None) -> Response:
        if request.method == "GET":
            page = self.paginate_queryset(message_list(conversation=self.get_object()))
            return self.get_paginated_response(MessageSerializer(page, many=True).data)
        payload = message_input(request.data)
        # The turn's first statement checks the conversation is the caller's (404 if not).
        user_message, assistant_message = message_send(
            user=request.user, conversation_id=pk, content=payload.content
        )
        return Response(
            {
                "user_message": MessageSerializer(user_message).data,
                "assistant_message": MessageSerializer(assistant_message).data,
            },
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(
        request=BranchSerializer,
        responses={201: ConversationSerializer},
        description="At an assistant reply: a new conversation with the history up to and "
        "including it. At a user message: edit and resend, i.e. the history before it, then "
        "the message (or `content`) sent as the branch's next turn and answered; a provider "
        "failure then answers 502/503 naming the branch in `details.conversation_id`.",
    )
    @action(detail=True, methods=["post"])
    def branch(self, request: Request, pk: str | None = None) -> Response:
        """Branch this conversation at a message."""
        conversation = self.get_object()
        payload = BranchSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        message = conversation.messages.filter(pk=payload.validated_data["message_id"]).first()
        if message is None:
            raise NotFound(
                "No such message in this conversation.", details={"message_id": ["Not found."]}
            )
        branch = conversation_branch(
            conversation=conversation,
            message=message,
            user=request.user,
            content=payload.validated_data.get("content"),
        )
        return Response(ConversationSerializer(branch).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        responses={200: ToolApprovalSerializer(many=True)},
        summary="The tool calls of this conversation's agent that needed approval",
    )
    @action(detail=True, methods=["get"])
    def approvals(self, request: Request, pk: str | None = None) -> Response:
        conversation = self.get_object()
        page = self.paginate_queryset(approval_list(user=request.user, conversation=conversation))
        return self.get_paginated_response(ToolApprovalSerializer(page, many=True).data)

    @extend_schema(
        request=ApprovalDecisionSerializer,
        responses={200: ApprovalOutcomeSerializer},
        summary="Approve or reject a pending tool call; the paused reply then resumes",
        description="The conversation's owner (or staff) decides. `approve` runs the call, "
        "`reject` hands the refusal (and `reason`) to the model as the tool's result; the "
        "reply then completes, or waits on its next call that needs approval. 409 when the "
        "call was already decided.",
    )
    @action(detail=True, methods=["post"], url_path="approvals/<uuid:approval_id>")
    @route_policy(rate="expensive")
    def approval_decide(
        self, request: Request, pk: str | None = None, approval_id: str | None = None
    ) -> Response:
        payload = ApprovalDecisionSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        approval, reply = approval_decide(
            user=request.user,
            conversation_id=pk,
            approval_id=approval_id,
            decision=payload.validated_data["decision"],
            reason=payload.validated_data["reason"],
        )
        return Response(
            {
                "approval": ToolApprovalSerializer(approval).data,
                "assistant_message": MessageSerializer(reply).data,
            }
        )

    @extend_schema(request=None, responses={201: ConversationSerializer})
    @action(detail=True, methods=["post"])
    def fork(self, request: Request, pk: str | None = None) -> Response:
        """An independent full copy of this conversation."""
        fork = conversation_fork(conversation=self.get_object(), user=request.user)
        return Response(ConversationSerializer(fork).data, status=status.HTTP_201_CREATED)


class MessageFeedbackView(APIView):
    parser_classes = [JSONParser]

    @extend_schema(
        request=FeedbackSerializer,
        responses={200: MessageSerializer},
        description="Only assistant replies take feedback: a user's message answers 404 "
        "(`not_a_reply`), like a message that does not exist or is not yours.",
    )
    def post(self, request: Request, message_id: UUID) -> Response:
        """Rate an assistant reply on a named scale: thumbs (-1, 0, 1) or stars (1 to 5)."""
        require_json_body(request)
        message = message_visible(user=request.user, message_id=message_id)
        if message is None:
            raise NotFound("Not found.")
        payload = FeedbackSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        message = message_feedback(
            message=message,
            scale=payload.validated_data["scale"],
            rating=payload.validated_data["rating"],
            comment=payload.validated_data["comment"],
            user=request.user,
        )
        return Response(MessageSerializer(message).data)


class ApprovalListView(generics.ListAPIView):
    """The tool approvals of your conversations (staff: everyone's), newest first;
    `?status=` narrows to pending, approved or rejected ones."""

    serializer_class = ToolApprovalSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, enum=list(ToolApproval.Status.values), required=False)
        ]
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return ToolApproval.objects.none()
        wanted = self.request.query_params.get("status")
        if wanted is not None and wanted not in ToolApproval.Status.values:
            raise ApplicationError(
                "Invalid input.",
                code="validation_error",
                details={"status": [f"One of: {', '.join(ToolApproval.Status.values)}."]},
            )
        return approval_list(user=self.request.user, status=wanted)  # type: ignore[arg-type]


class UsageView(APIView):
    @extend_schema(
        responses=inline_serializer(
            "Usage",
            {
                "user": serializers.CharField(),
                "conversations": serializers.IntegerField(),
                "tokens_in": serializers.IntegerField(),
                "tokens_out": serializers.IntegerField(),
                "cost": serializers.DecimalField(
                    max_digits=14, decimal_places=6, allow_null=True, help_text=COST_HELP
                ),
                "unpriced_replies": serializers.IntegerField(),
                "by_model": inline_serializer(
                    "UsageByModel",
                    {
                        "model": serializers.CharField(),
                        "replies": serializers.IntegerField(),
                        "unpriced_replies": serializers.IntegerField(),
                        "tokens_in": serializers.IntegerField(),
                        "tokens_out": serializers.IntegerField(),
                        "cost": serializers.DecimalField(
                            max_digits=14, decimal_places=6, allow_null=True
                        ),
                    },
                    many=True,
                ),
            },
        )
    )
    def get(self, request: Request) -> Response:
        """Your tokens and cost, in total and by model."""
        return Response(usage_for(user=request.user))


# --- streaming (Ninja, async) --------------------------------------------------------------------
router = Router(tags=["conversations"])


def _sse_event(event: TurnEvent) -> tuple[str, dict[str, Any]]:
    """A turn's domain event as the stream's event name and data."""
    if isinstance(event, Token):
        return "delta", {"content": event.content}
    if isinstance(event, ToolCallStarted):
        return "tool_call", {"id": event.id, "name": event.name, "args": event.args}
    if isinstance(event, ToolCallFinished):
        return "tool_result", {
            "id": event.id,
            "name": event.name,
            "result": event.result,
            "error": event.error,
            "latency_ms": event.latency_ms,
            "approval": event.approval,
        }
    if isinstance(event, ApprovalRequired):
        return "approval_required", {
            "approval_id": event.approval_id,
            "tool_call_id": event.tool_call_id,
            "name": event.name,
            "args": event.args,
        }
    if isinstance(event, TurnStarted):
        return "start", _turn_ids(event.user_message_id, event.assistant_message_id)
    if isinstance(event, TurnFinished):
        reply = event.assistant_message
        usage = {
            "tokens_in": reply.tokens_in,
            "tokens_out": reply.tokens_out,
            "cost": format_cost(reply.cost),
        }
        ids = _turn_ids(str(event.user_message.pk), str(reply.pk))
        return "done", {
            **ids,
            "status": reply.status,
            "usage": usage,
            "latency_ms": reply.latency_ms,
        }
    error = event.error
    return "error", {
        **error_payload(error.code, error.message, error.details),
        "status": error.status,
    }


def _turn_ids(user_message_id: str, assistant_message_id: str) -> dict[str, str]:
    return {"user_message_id": user_message_id, "assistant_message_id": assistant_message_id}


def _sse(event: TurnEvent) -> str:
    name, data = _sse_event(event)
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


@router.post(
    "/conversations/{conversation_id}/messages/stream/",
    summary="Send a message; the reply streams back as server-sent events",
    description=(
        "Events: `start` (message ids), `delta` (`{content}` token text), in an agent's "
        "turn `tool_call` (`{id, name, args}`, the model asked for a tool) and "
        "`tool_result` (`{id, name, result, error, latency_ms, approval}`), "
        "`approval_required` (`{approval_id, tool_call_id, name, args}`: the turn pauses, "
        "`done` follows with status `awaiting_approval`), then `done` (ids, status, usage, "
        "latency) or `error` (the error envelope's body). A client that disconnects leaves "
        "its message and the partial reply, marked incomplete."
    ),
    response={200: None},
    # An API key, or a staff member's admin session (the operator console's chat page).
    auth=[NinjaApiKeyAuth(), NinjaStaffSessionAuth()],
    openapi_extra={
        "responses": {
            "200": {
                "description": "text/event-stream",
                # Each event, as SSE parsers (and schemathesis) read it.
                "content": {
                    "text/event-stream": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "event": {
                                    "enum": [
                                        "start",
                                        "delta",
                                        "tool_call",
                                        "tool_result",
                                        "approval_required",
                                        "done",
                                        "error",
                                    ]
                                },
                                "data": {"type": "string", "description": "JSON"},
                            },
                            "required": ["event", "data"],
                        }
                    }
                },
            }
        }
    },
)
@route_policy(rate="expensive")
async def stream_message(request: HttpRequest, conversation_id: UUID, payload: MessageIn) -> Any:
    # Both authentications set request.user: the key's owner, or the staff session's user.
    user = request.user
    # A connection authentication left in this request's thread is the one the next
    # db_call (same thread) uses, then gives back.
    # The turn's first statement checks the conversation is the caller's (404 if not).
    events = await message_stream(
        user=user, conversation_id=conversation_id, content=payload.content
    )

    async def body() -> AsyncIterator[str]:
        # aclosing: the turn learns at once that its reader has gone (it then stops and
        # keeps the partial reply).
        async with contextlib.aclosing(events) as stream:
            async for event in stream:
                yield _sse(event)

    response = StreamingHttpResponse(body(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: don't buffer the stream
    return response
