"""The API assembly: DRF resources and Ninja async operations under /api/v1/, one schema."""

from __future__ import annotations

import json
from typing import Any

from django.urls import include, path, register_converter
from ninja import NinjaAPI
from rest_framework.routers import SimpleRouter

from accounts.api import ApiKeyViewSet, SecurityCounterList
from accounts.api import router as accounts_router
from accounts.authentication import NinjaApiKeyAuth
from agents.api import AgentViewSet
from conversations.api import (
    ApprovalListView,
    ConversationViewSet,
    MessageFeedbackView,
    UsageView,
)
from conversations.api import router as conversations_router
from datamgmt.api import (
    BackupViewSet,
    BulkOperationView,
    ExportViewSet,
    RestoreViewSet,
    RetentionPolicyViewSet,
)
from experiments.api import ExperimentViewSet
from jobs.api import JobViewSet
from knowledge.api import DocumentViewSet, MetadataQueryView, SearchView
from plugins.api import PluginHealthView, PluginRouteView, PluginViewSet
from plugins.urls import PluginNameConverter
from web.exception_handlers import install_ninja_handlers
from web.health import router as health_router
from webhooks.api import DeliveryViewSet, EndpointViewSet, EventTypeList

API_PREFIX = "/api/v1/"

# Path converters (uuid, int) rather than regexes: a malformed id is a 404 at the resolver.
router = SimpleRouter(use_regex_path=False)
router.register("api-keys", ApiKeyViewSet, basename="api-key")
router.register("conversations", ConversationViewSet, basename="conversation")
router.register("jobs", JobViewSet, basename="job")
router.register("documents", DocumentViewSet, basename="document")
router.register("agents", AgentViewSet, basename="agent")
router.register("exports", ExportViewSet, basename="export")
router.register("backups", BackupViewSet, basename="backup")
router.register("restores", RestoreViewSet, basename="restore")
router.register("retention-policies", RetentionPolicyViewSet, basename="retention-policy")
router.register("experiments", ExperimentViewSet, basename="experiment")
router.register("webhooks/endpoints", EndpointViewSet, basename="webhook-endpoint")
router.register("webhooks/deliveries", DeliveryViewSet, basename="webhook-delivery")
router.register("plugins", PluginViewSet, basename="plugin")
register_converter(PluginNameConverter, "plugin_name")

ninja_api = NinjaAPI(
    title="Chatter async API",
    version="1",
    urls_namespace="ninja-v1",
    # One OpenAPI document for clients: Ninja's operations are merged into spectacular's.
    openapi_url=None,
    docs_url=None,
    auth=NinjaApiKeyAuth(),
)
install_ninja_handlers(ninja_api)
ninja_api.add_router("", health_router)
ninja_api.add_router("", accounts_router)
ninja_api.add_router("", conversations_router)

urlpatterns = [
    # Before the router: "health" is no plugin's id (nor, reserved, any plugin's name).
    path("plugins/health/", PluginHealthView.as_view(), name="plugins-health"),
    path("", include(router.urls)),
    path(
        "messages/<uuid:message_id>/feedback/",
        MessageFeedbackView.as_view(),
        name="message-feedback",
    ),
    path("usage/", UsageView.as_view(), name="usage"),
    path("bulk-operations/", BulkOperationView.as_view(), name="bulk-operations"),
    path("approvals/", ApprovalListView.as_view(), name="approvals"),
    path("security/events/", SecurityCounterList.as_view(), name="security-events"),
    path("knowledge/search/", SearchView.as_view(), name="knowledge-search"),
    path("knowledge/metadata-query/", MetadataQueryView.as_view(), name="knowledge-metadata-query"),
    path("webhooks/event-types/", EventTypeList.as_view(), name="webhook-event-types"),
    # Plugins' own routes, after the plugins resource (whose ids are UUIDs, never names).
    path("plugins/<plugin_name:name>/", PluginRouteView.as_view(), name="plugin-route-root"),
    path(
        "plugins/<plugin_name:name>/<path:path>",
        PluginRouteView.as_view(),
        name="plugin-route",
    ),
    path("", ninja_api.urls),
]


def _rewrite_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {
            key: (
                renames.get(value, value)
                if key == "$ref" and isinstance(value, str)
                else _rewrite_refs(value, renames)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(item, renames) for item in node]
    return node


def merge_ninja_schema(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: add Ninja's paths and components.

    Ninja uses int response codes (a JSON round trip makes them strings, as YAML output
    needs); its component names may clash with DRF's, so clashing ones are renamed and
    their $refs rewritten; its bearer scheme is the same key scheme as DRF's.
    """
    ninja = json.loads(json.dumps(ninja_api.get_openapi_schema(path_prefix=API_PREFIX.rstrip("/"))))
    components = result.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    renames: dict[str, str] = {}
    for name in ninja.get("components", {}).get("schemas", {}):
        if name in schemas:
            renames[f"#/components/schemas/{name}"] = f"#/components/schemas/{name}Async"
    ninja = _rewrite_refs(ninja, renames)
    for name, schema in ninja.get("components", {}).get("schemas", {}).items():
        schemas[f"{name}Async" if f"#/components/schemas/{name}" in renames else name] = schema

    ninja_schemes = set(ninja.get("components", {}).get("securitySchemes", {}))
    for path_key, operations in ninja.get("paths", {}).items():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            security = operation.get("security")
            if not security:
                operation["security"] = []  # public, stated explicitly
            else:
                operation["security"] = [
                    {"ApiKeyAuth": []} if set(entry) & ninja_schemes else entry
                    for entry in security
                ]
        result.setdefault("paths", {}).setdefault(path_key, {}).update(operations)
    result["paths"] = dict(sorted(result["paths"].items()))
    return result
