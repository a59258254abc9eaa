"""Accounts API: the caller's API keys (DRF) and `whoami` (Ninja, async)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from drf_spectacular.utils import extend_schema
from ninja import Router, Schema
from rest_framework import generics, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import UnsupportedMediaType
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import DEFAULT_SCOPES, ApiKey, ApiKeyScope, SecurityCounter
from accounts.permissions import HasApiScope, IsStaff
from accounts.selectors import api_key_list
from accounts.services import api_key_create, api_key_revoke
from core.validation import NullableDateTimeField, RejectUnknownFields, StrictCharField


class ApiKeySerializer(RejectUnknownFields, serializers.ModelSerializer):
    owner = serializers.CharField(source="user.username", read_only=True)
    name = StrictCharField(max_length=100)
    # The default is stated in the schema (and README), so a client (or a form) that
    # leaves scopes out knows it gets read and write.
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=ApiKeyScope.choices),
        default=DEFAULT_SCOPES,
        min_length=1,
        help_text="What the key may do: `read` (safe methods), `write` (everything else). "
        "Default when left out: both.",
    )
    is_active = serializers.BooleanField(read_only=True)
    expires_at = NullableDateTimeField(
        help_text="When the key stops working (null: never). A time in the past makes a key "
        "that is already expired (`is_active` false)."
    )

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "name",
            "prefix",
            "owner",
            "scopes",
            "expires_at",
            "revoked_at",
            "last_used_at",
            "created_at",
            "is_active",
        ]
        read_only_fields = ["id", "prefix", "owner", "revoked_at", "last_used_at", "created_at"]


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(read_only=True, help_text="The key itself, shown this once.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]


class ApiKeyViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """The caller's API keys (staff see everyone's). Keys are revoked, never deleted."""

    serializer_class = ApiKeySerializer
    lookup_value_converter = "uuid"
    # JSON only: a form cannot tell an empty `scopes` list from a missing one, and a key's
    # scopes must never be guessed (the admin has its own form).
    parser_classes = [JSONParser]

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return ApiKey.objects.none()
        return api_key_list(user=self.request.user)

    @extend_schema(responses={201: ApiKeyCreatedSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        # Checked here as well: when middleware has already read a form body, DRF hands the
        # view empty data instead of refusing the media type.
        if (request.content_type or "").split(";")[0].strip() != "application/json":
            raise UnsupportedMediaType(request.content_type)
        serializer = ApiKeySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        api_key, raw = api_key_create(
            user=request.user,
            name=serializer.validated_data["name"],
            scopes=serializer.validated_data.get("scopes"),
            expires_at=serializer.validated_data.get("expires_at"),
            request=request,
        )
        api_key.key = raw  # type: ignore[attr-defined]
        return Response(ApiKeyCreatedSerializer(api_key).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: ApiKeySerializer})
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str | None = None) -> Response:
        api_key = api_key_revoke(api_key=self.get_object(), actor=request.user, request=request)
        return Response(ApiKeySerializer(api_key).data)


class SecurityCounterSerializer(serializers.ModelSerializer):
    class Meta:
        model = SecurityCounter
        fields = ["event", "day", "count", "updated_at"]


class SecurityCounterList(generics.ListAPIView):
    """Security events per day (threats flagged and refused, rate limits hit). Staff only."""

    serializer_class = SecurityCounterSerializer
    permission_classes = [HasApiScope, IsStaff]
    queryset = SecurityCounter.objects.all()


# --- Ninja ---------------------------------------------------------------------------------
router = Router(tags=["accounts"])


class WhoAmI(Schema):
    username: str
    is_staff: bool
    key_prefix: str | None
    scopes: list[str]


@router.get("/whoami/", response=WhoAmI, summary="The user and key behind this request")
async def whoami(request: HttpRequest) -> dict[str, Any]:
    api_key: ApiKey = request.auth  # type: ignore[attr-defined]
    return {
        "username": api_key.user.username,
        "is_staff": api_key.user.is_staff,
        "key_prefix": api_key.prefix,
        "scopes": api_key.scopes,
    }


__all__ = ["ApiKeyViewSet", "SecurityCounterList", "router"]
