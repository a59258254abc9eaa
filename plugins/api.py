"""Plugins API (DRF, staff only): list, detail, install (a wheel upload; also updates),
enable, disable, configure, uninstall, health; and the routes plugins add under
/api/v1/plugins/<name>/..., dispatched to the enabled plugin."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema, extend_schema_field, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import HasApiScope, IsStaff
from core.errors import ApplicationError, Forbidden, NotFound
from core.validation import RejectUnknownFields, StrictCharField, require_json_body
from plugins.context import PluginFailed, PluginPermissionDenied, PluginResponse
from plugins.extensions import request_view
from plugins.manifest import PERMISSIONS, schema_errors
from plugins.models import Plugin
from plugins.runtime import loaded_plugin, plugin_call, plugins_sync_quietly
from plugins.selectors import (
    plugin_config_masked,
    plugin_get,
    plugin_list,
    plugin_status,
)
from plugins.services import (
    plugin_configure,
    plugin_disable,
    plugin_discover,
    plugin_enable,
    plugin_install,
    plugin_uninstall,
    plugins_health,
)
from web.http_policy import route_policy


class PluginSerializer(serializers.ModelSerializer):
    config = serializers.SerializerMethodField(help_text="Secrets are shown as ********.")
    status = serializers.SerializerMethodField(
        help_text="ok, failing (errors in a row), disabled or auto_disabled."
    )
    provides = serializers.SerializerMethodField(
        help_text="What it registered in the process that answers (null: not loaded here)."
    )

    class Meta:
        model = Plugin
        fields = [
            "id",
            "name",
            "version",
            "description",
            "author",
            "license",
            "type",
            "entry_point",
            "capabilities",
            "permissions_requested",
            "permissions_granted",
            "config_schema",
            "config",
            "chatter_versions",
            "source",
            "enabled",
            "status",
            "disabled_reason",
            "auto_disabled_at",
            "error_count",
            "timeout_count",
            "consecutive_failures",
            "last_error",
            "last_error_point",
            "last_error_at",
            "provides",
            "installed_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_config(self, plugin: Plugin) -> dict[str, Any]:
        return plugin_config_masked(plugin)

    def get_status(self, plugin: Plugin) -> str:
        return plugin_status(plugin)

    @extend_schema_field(
        serializers.DictField(
            child=serializers.ListField(child=serializers.CharField()), allow_null=True
        )
    )
    def get_provides(self, plugin: Plugin) -> dict[str, list[str]] | None:
        loaded = loaded_plugin(plugin.name)
        if loaded is None or loaded.id != str(plugin.pk):
            return None
        return loaded.provides()


class InstallSerializer(RejectUnknownFields, serializers.Serializer):
    file = serializers.FileField(help_text="A pure-Python wheel (.whl).")
    sha256 = StrictCharField(
        min_length=64, max_length=64, help_text="The file's SHA-256 (hex): checked first."
    )
    config = StrictCharField(
        required=False,
        max_length=65536,
        help_text="For an update: the configuration (a JSON object) for the new version, "
        "when the current one does not fit its schema.",
    )


class EnableSerializer(RejectUnknownFields, serializers.Serializer):
    permissions = serializers.ListField(
        child=serializers.ChoiceField(choices=sorted(PERMISSIONS)),
        required=False,
        max_length=len(PERMISSIONS),
        help_text="Permissions granted (each one the plugin asked for); left out: the "
        "current grants.",
    )


class ConfigureSerializer(RejectUnknownFields, serializers.Serializer):
    config = serializers.DictField(help_text="Checked against the plugin's config_schema.")


def _plugin_response(plugin: Plugin, code: int = status.HTTP_200_OK) -> Response:
    return Response(PluginSerializer(plugin_get(plugin_id=plugin.pk)).data, status=code)


class PluginViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Installed plugins (staff only). The list also registers pip-installed plugins this
    process finds (the chatter.plugins entry points), disabled."""

    permission_classes = [HasApiScope, IsStaff]
    parser_classes = [JSONParser]
    serializer_class = PluginSerializer
    lookup_value_converter = "uuid"

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return Plugin.objects.none()
        return plugin_list()

    def get_object(self) -> Plugin:
        return plugin_get(plugin_id=self.kwargs["pk"])

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        plugin_discover(actor=request.user)
        return super().list(request, *args, **kwargs)

    @extend_schema(
        request={"multipart/form-data": InstallSerializer},
        responses={201: PluginSerializer, 200: PluginSerializer},
        description="Install a plugin from a wheel (201, disabled until enabled), or update "
        "the installed plugin of that name to the wheel's version (200; its configuration "
        "kept if it fits the new schema, else the `config` sent, else 400 "
        "`config_incompatible`). 400 for a bad hash (`hash_mismatch`), a file that is not "
        "a wheel (`invalid_wheel`), no manifest (`missing_manifest`), a manifest off its "
        "schema (`invalid_manifest`), a wheel too large (`wheel_too_large`) or an "
        "incompatible Chatter version (`incompatible_version`).",
    )
    @action(detail=False, methods=["post"], parser_classes=[MultiPartParser])
    @route_policy(uploads=True)
    def install(self, request: Request) -> Response:
        serializer = InstallSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        values = serializer.validated_data
        upload = values["file"]
        if upload.size > settings.CHATTER_PLUGIN_MAX_WHEEL_BYTES:
            raise ApplicationError(
                f"The wheel is {upload.size} bytes; at most "
                f"{settings.CHATTER_PLUGIN_MAX_WHEEL_BYTES} are accepted.",
                code="wheel_too_large",
                details={"file": ["Too large."]},
            )
        config = None
        if "config" in values:
            try:
                config = json.loads(values["config"])
            except ValueError:
                config = None
            if not isinstance(config, dict):
                raise ApplicationError(
                    "config is a JSON object.", details={"config": ["Not a JSON object."]}
                )
        plugin, created = plugin_install(
            actor=request.user,
            filename=upload.name,
            data=upload.read(),
            sha256=values["sha256"],
            config=config,
            request=request._request,
        )
        return _plugin_response(plugin, status.HTTP_201_CREATED if created else 200)

    @extend_schema(request=EnableSerializer, responses={200: PluginSerializer})
    @action(detail=True, methods=["post"])
    def enable(self, request: Request, pk: str | None = None) -> Response:
        require_json_body(request)
        serializer = EnableSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        plugin = plugin_enable(
            plugin=self.get_object(),
            actor=request.user,
            permissions=serializer.validated_data.get("permissions"),
            request=request._request,
        )
        return _plugin_response(plugin)

    @extend_schema(request=None, responses={200: PluginSerializer})
    @action(detail=True, methods=["post"])
    def disable(self, request: Request, pk: str | None = None) -> Response:
        plugin = plugin_disable(
            plugin=self.get_object(), actor=request.user, request=request._request
        )
        return _plugin_response(plugin)

    @extend_schema(request=ConfigureSerializer, responses={200: PluginSerializer})
    @action(detail=True, methods=["post"])
    def configure(self, request: Request, pk: str | None = None) -> Response:
        require_json_body(request)
        serializer = ConfigureSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        plugin = plugin_configure(
            plugin=self.get_object(),
            actor=request.user,
            config=serializer.validated_data["config"],
            request=request._request,
        )
        return _plugin_response(plugin)

    @extend_schema(
        request=None,
        responses={
            200: inline_serializer(
                "PluginUninstalled",
                {"name": serializers.CharField(), "uninstalled": serializers.BooleanField()},
            )
        },
        description="Remove the plugin, its wheel and its data, in every process.",
    )
    @action(detail=True, methods=["post"])
    def uninstall(self, request: Request, pk: str | None = None) -> Response:
        name = plugin_uninstall(
            plugin=self.get_object(), actor=request.user, request=request._request
        )
        return Response({"name": name, "uninstalled": True})


class PluginHealthView(APIView):
    """Each plugin's health: counters, whether this process loaded it, its own check."""

    permission_classes = [HasApiScope, IsStaff]

    @extend_schema(
        responses={
            200: inline_serializer(
                "PluginsHealth",
                {
                    "status": serializers.ChoiceField(choices=["ok", "degraded"]),
                    "generation": serializers.IntegerField(allow_null=True),
                    "plugins": serializers.ListField(child=serializers.DictField()),
                },
            )
        },
        description="status ok when every plugin is ok or disabled by an operator; "
        "degraded when one is failing, auto-disabled or not loaded in this process.",
    )
    def get(self, request: Request) -> Response:
        plugins_sync_quietly()
        return Response(plugins_health())


def _body_check(schema: dict[str, Any], body: Any) -> None:
    """The body against the route's declared JSON Schema: every error, in the envelope."""
    details = schema_errors(schema, body, root="body")
    if details:
        raise ApplicationError(
            "The body does not fit the route's schema.", code="validation_error", details=details
        )


class PluginRouteView(APIView):
    """A plugin's own route: /api/v1/plugins/<name>/<path>, answered by the enabled plugin.
    Outside the OpenAPI document (each plugin documents its routes)."""

    parser_classes = [JSONParser]
    http_method_names = ["get", "post", "put", "patch", "delete"]

    def _dispatch(self, request: Request, name: str, path: str) -> Response:
        plugins_sync_quietly()
        loaded = loaded_plugin(name)
        path = path.strip("/")
        route = None
        if loaded is not None:
            route = next(
                (r for r in loaded.routes if r.path == path and request.method in r.methods),
                None,
            )
        if loaded is None or route is None:
            raise NotFound("Not found.")
        if route.staff_only and not request.user.is_staff:
            raise Forbidden("This route needs a staff account.")
        body = request.data if request.method not in ("GET", "DELETE") and request.body else None
        if route.request_schema is not None and request.method not in ("GET", "DELETE"):
            _body_check(route.request_schema, body)
        view = request_view(request._request, body=body, subpath=path)
        try:
            result = plugin_call(
                loaded,
                f"route:{path}",
                route.func,
                loaded.context(user=request.user),
                view,
                budget=settings.CHATTER_PLUGIN_ROUTE_BUDGET,
            )
        except PluginFailed as exc:
            cause = exc.__cause__
            if (
                isinstance(cause, ApplicationError)
                and cause.status < 500
                and not isinstance(cause, PluginPermissionDenied)
            ):
                raise cause from None  # a refusal the plugin meant (a 4xx, not counted)
            raise
        if isinstance(result, PluginResponse):
            response = Response(result.body, status=result.status)
            for header, value in result.headers.items():
                if header.lower().startswith("x-"):
                    response[header] = value
            return response
        return Response(result)

    @extend_schema(exclude=True)
    def get(self, request: Request, name: str, path: str = "") -> Response:
        return self._dispatch(request, name, path)

    @extend_schema(exclude=True)
    def post(self, request: Request, name: str, path: str = "") -> Response:
        return self._dispatch(request, name, path)

    @extend_schema(exclude=True)
    def put(self, request: Request, name: str, path: str = "") -> Response:
        return self._dispatch(request, name, path)

    @extend_schema(exclude=True)
    def patch(self, request: Request, name: str, path: str = "") -> Response:
        return self._dispatch(request, name, path)

    @extend_schema(exclude=True)
    def delete(self, request: Request, name: str, path: str = "") -> Response:
        return self._dispatch(request, name, path)
