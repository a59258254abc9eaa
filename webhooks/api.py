"""Webhooks API (DRF): endpoints (CRUD, test, rotate-secret, redeliver-failed), deliveries
(list, detail with attempts, redeliver) and the event types with their payload schemas."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.events import event_types
from core.validation import (
    RejectUnknownFields,
    StrictCharField,
    StrictIntegerField,
    require_json_body,
)
from web.http_policy import route_policy
from webhooks.models import Delivery, DeliveryAttempt, DeliveryStatus, Endpoint
from webhooks.selectors import (
    delivery_get,
    delivery_list,
    endpoint_get,
    endpoint_list,
)
from webhooks.services import (
    HEADER_NAME_PATTERN,
    HEADER_VALUE_PATTERN,
    MAX_HEADER_VALUE,
    MAX_HEADERS,
    MAX_OVERLAP_SECONDS,
    MAX_TIMEOUT_SECONDS,
    deliveries_redeliver_failed,
    delivery_redeliver,
    endpoint_create,
    endpoint_delete,
    endpoint_rotate_secret,
    endpoint_test,
    endpoint_update,
    subscribable_event_types,
)


class StrictBooleanField(serializers.BooleanField):
    """JSON true/false only: DRF's own would read "yes", 1 and "on" as true."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class EventTypeNameField(StrictCharField):
    """An event type one may subscribe to; the schema lists the registry's."""


class EventTypeNameFieldSchema(OpenApiSerializerFieldExtension):
    target_class = EventTypeNameField

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        return {"type": "string", "enum": subscribable_event_types()}


class EventTypesField(serializers.ListField):
    """Event types, each named once; empty: every type."""


class EventTypesFieldSchema(OpenApiSerializerFieldExtension):
    target_class = EventTypesField

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        return {**schema, "uniqueItems": True} if direction == "request" else schema


class StrictHeaderValueField(serializers.CharField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(trim_whitespace=False, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class HeadersField(serializers.DictField):
    """Extra headers sent with every delivery (not the ones Chatter sets itself)."""

    def __init__(self, **kwargs: Any) -> None:
        # A plain string child: the service refuses what a header cannot carry (a 400)
        # rather than stripping it, as the schema's pattern says.
        child = StrictHeaderValueField(max_length=MAX_HEADER_VALUE, allow_blank=True)
        super().__init__(child=child, **kwargs)


class HeadersFieldSchema(OpenApiSerializerFieldExtension):
    target_class = HeadersField

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        value = {"type": "string", "maxLength": MAX_HEADER_VALUE}
        if direction != "request":
            return {"type": "object", "additionalProperties": value}
        return {
            "type": "object",
            "maxProperties": MAX_HEADERS,
            "propertyNames": {"pattern": HEADER_NAME_PATTERN},
            "additionalProperties": {**value, "pattern": HEADER_VALUE_PATTERN},
            "description": "Header names are HTTP tokens; Content-Type, Host, User-Agent and "
            "the webhook-* headers are Chatter's own (refused).",
        }


class EndpointSerializer(serializers.ModelSerializer):
    timeout = serializers.IntegerField(source="timeout_seconds", read_only=True)
    events = serializers.ListField(
        child=serializers.CharField(), read_only=True, help_text="Empty: every event type."
    )
    headers = serializers.DictField(child=serializers.CharField(), read_only=True)
    owner = serializers.CharField(source="owner.username", read_only=True)

    class Meta:
        model = Endpoint
        fields = [
            "id",
            "name",
            "url",
            "events",
            "headers",
            "timeout",
            "scope",
            "owner",
            "is_active",
            "disabled_reason",
            "disabled_at",
            "consecutive_failures",
            "failing_since",
            "last_success_at",
            "last_failure_at",
            "secret_rotated_at",
            "previous_secret_expires_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class EndpointWithSecretSerializer(EndpointSerializer):
    secret = serializers.CharField(
        read_only=True,
        help_text="whsec_ + base64 of the signing key: shown in this response only. Verify "
        "each delivery's webhook-signature with it (Standard Webhooks).",
    )

    class Meta(EndpointSerializer.Meta):
        fields = [*EndpointSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class EndpointInputSerializer(RejectUnknownFields, serializers.Serializer):
    name = StrictCharField(max_length=200)
    url = StrictCharField(
        max_length=2048,
        help_text="http(s); its host must resolve to public addresses only (or be in "
        "CHATTER_WEBHOOK_ALLOWED_HOSTS), checked now and at every send.",
    )
    events = EventTypesField(
        child=EventTypeNameField(max_length=100),
        required=False,
        max_length=50,
        help_text="Event types to receive (GET webhooks/event-types/); empty or left out: all.",
    )
    headers = HeadersField(required=False)
    timeout = StrictIntegerField(
        required=False,
        min_value=1,
        max_value=MAX_TIMEOUT_SECONDS,
        help_text="Seconds a delivery may take (default 15).",
    )
    scope = serializers.ChoiceField(
        choices=Endpoint.Scope.choices,
        required=False,
        help_text="own (default): your events; all: every user's (staff only).",
    )


class EndpointUpdateSerializer(EndpointInputSerializer):
    is_active = StrictBooleanField(
        required=False,
        help_text="true enables a disabled endpoint (its failures forgotten); false disables "
        "it (its pending deliveries fail; redeliver them later).",
    )


class RotateSecretSerializer(RejectUnknownFields, serializers.Serializer):
    overlap_seconds = StrictIntegerField(
        required=False,
        min_value=0,
        max_value=MAX_OVERLAP_SECONDS,
        help_text="How long the old secret still signs too (default 86400; 0: stop at once).",
    )


class EventSerializer(serializers.Serializer):
    """The event as its deliveries carry it."""

    id = serializers.CharField()
    type = serializers.CharField()
    timestamp = serializers.DateTimeField(source="created_at")
    data = serializers.DictField()


class DeliverySerializer(serializers.ModelSerializer):
    endpoint = serializers.UUIDField(source="endpoint_id", read_only=True)
    event = EventSerializer(read_only=True)

    class Meta:
        model = Delivery
        fields = [
            "id",
            "endpoint",
            "event",
            "event_type",
            "status",
            "attempt_count",
            "next_attempt_at",
            "last_status_code",
            "last_error",
            "last_attempt_at",
            "delivered_at",
            "is_test",
            "created_at",
        ]
        read_only_fields = fields


class AttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeliveryAttempt
        fields = [
            "number",
            "started_at",
            "duration_ms",
            "status_code",
            "succeeded",
            "response_excerpt",
            "error",
            "address",
            "webhook_timestamp",
        ]
        read_only_fields = fields


class DeliveryDetailSerializer(DeliverySerializer):
    attempts = AttemptSerializer(many=True, read_only=True, help_text="Every attempt, in order.")

    class Meta(DeliverySerializer.Meta):
        fields = [*DeliverySerializer.Meta.fields, "attempts"]
        read_only_fields = fields


class EventTypeSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    subscribable = serializers.BooleanField(
        help_text="false: sent only by the action that makes it (webhook.test)."
    )
    schema = serializers.DictField(help_text="The JSON Schema (2020-12) of the event's data.")


class DeliveryListFilterSerializer(serializers.Serializer):
    """The list's query parameters: a bad value is a 400, not an empty page."""

    endpoint = serializers.UUIDField(required=False)
    status = serializers.ChoiceField(
        choices=DeliveryStatus.choices,
        required=False,
        error_messages={
            "invalid_choice": f'"{{input}}" is not one of: {", ".join(DeliveryStatus.values)}.'
        },
    )
    event_type = serializers.CharField(required=False, max_length=100)


class EndpointViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Your webhook endpoints (staff see all). Others' ids answer 404."""

    parser_classes = [JSONParser]
    serializer_class = EndpointSerializer
    lookup_value_converter = "uuid"

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return Endpoint.objects.none()
        return endpoint_list(user=self.request.user)

    def get_object(self) -> Endpoint:
        return endpoint_get(user=self.request.user, endpoint_id=self.kwargs["pk"])

    @extend_schema(
        request=EndpointInputSerializer,
        responses={201: EndpointWithSecretSerializer},
        description="201 with the endpoint and its secret, the only response that shows it.",
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        require_json_body(request)
        serializer = EndpointInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint = endpoint_create(owner=request.user, **serializer.validated_data)
        return Response(EndpointWithSecretSerializer(endpoint).data, status=status.HTTP_201_CREATED)

    def _update(self, request: Request, *, partial: bool) -> Response:
        require_json_body(request)
        endpoint = self.get_object()
        serializer = EndpointUpdateSerializer(data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        endpoint = endpoint_update(
            endpoint=endpoint, actor=request.user, **serializer.validated_data
        )
        return Response(EndpointSerializer(endpoint).data)

    @extend_schema(request=EndpointUpdateSerializer, responses={200: EndpointSerializer})
    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self._update(request, partial=False)

    @extend_schema(request=EndpointUpdateSerializer, responses={200: EndpointSerializer})
    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self._update(request, partial=True)

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        endpoint_delete(endpoint=self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request=None,
        responses={200: DeliveryDetailSerializer},
        description="Send a webhook.test event to this endpoint now, once (the request waits "
        "for it), and answer its delivery with the attempt: status code, duration, response "
        "excerpt, error. Works on a disabled endpoint too.",
    )
    @action(detail=True, methods=["post"])
    @route_policy(rate="expensive")
    def test(self, request: Request, pk: str | None = None) -> Response:
        delivery = endpoint_test(endpoint=self.get_object(), actor=request.user)
        return Response(DeliveryDetailSerializer(delivery).data)

    @extend_schema(
        request=RotateSecretSerializer,
        responses={200: EndpointWithSecretSerializer},
        description="A new secret (in this response only). Deliveries are signed with the "
        "old one too for overlap_seconds, so a receiver can switch without losing any.",
    )
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request: Request, pk: str | None = None) -> Response:
        require_json_body(request)
        endpoint = self.get_object()
        serializer = RotateSecretSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint = endpoint_rotate_secret(
            endpoint=endpoint,
            actor=request.user,
            overlap_seconds=serializer.validated_data.get("overlap_seconds"),
        )
        return Response(EndpointWithSecretSerializer(endpoint).data)

    @extend_schema(
        request=None,
        responses={
            200: inline_serializer(
                "WebhookRedeliverFailed",
                {"redelivered": serializers.IntegerField(help_text="Deliveries queued again.")},
            )
        },
        description="Queue every failed delivery of this endpoint again (409 while it is "
        "disabled).",
    )
    @action(detail=True, methods=["post"], url_path="redeliver-failed")
    def redeliver_failed(self, request: Request, pk: str | None = None) -> Response:
        count = deliveries_redeliver_failed(endpoint=self.get_object(), actor=request.user)
        return Response({"redelivered": count})


class DeliveryViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Deliveries to your endpoints (staff: all), newest first; a delivery's detail lists
    every attempt."""

    serializer_class = DeliverySerializer
    lookup_value_converter = "uuid"

    def get_serializer_class(self) -> Any:
        return DeliveryDetailSerializer if self.action == "retrieve" else DeliverySerializer

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return Delivery.objects.none()
        filters = DeliveryListFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        values = filters.validated_data
        return delivery_list(
            user=self.request.user,
            endpoint_id=values.get("endpoint"),
            status=values.get("status"),
            event_type=values.get("event_type"),
        )

    def get_object(self) -> Delivery:
        return delivery_get(user=self.request.user, delivery_id=self.kwargs["pk"])

    @extend_schema(
        parameters=[
            OpenApiParameter("endpoint", str, description="An endpoint's id."),
            OpenApiParameter("status", str, enum=DeliveryStatus.values),
            OpenApiParameter("event_type", str),
        ],
        responses={200: DeliverySerializer(many=True)},
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(responses={200: DeliveryDetailSerializer})
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(DeliveryDetailSerializer(self.get_object()).data)

    @extend_schema(
        request=None,
        responses={200: DeliverySerializer},
        description="Send a finished delivery again, same webhook-id, on a fresh retry "
        "schedule (409 while it is pending or sending, or its endpoint is disabled).",
    )
    @action(detail=True, methods=["post"])
    def redeliver(self, request: Request, pk: str | None = None) -> Response:
        delivery = delivery_redeliver(delivery=self.get_object(), actor=request.user)
        return Response(DeliverySerializer(delivery).data)


class EventTypeList(APIView):
    """The event types, each with the JSON Schema of its payload's data."""

    @extend_schema(
        responses={200: EventTypeSerializer(many=True)}, description="Not paginated: the registry."
    )
    def get(self, request: Request) -> Response:
        return Response(
            [
                {
                    "name": spec.name,
                    "description": spec.description,
                    "subscribable": spec.broadcast,
                    "schema": spec.schema,
                }
                for spec in event_types()
            ]
        )
