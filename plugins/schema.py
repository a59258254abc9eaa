"""The enabled plugins' routes in the API's OpenAPI document (a drf-spectacular hook).

Why and how: docs/architecture.md, "plugins/schema.py".
"""

from __future__ import annotations

import re
from typing import Any

from plugins.runtime import loaded_plugins, plugins_sync_quietly

_BODY_METHODS = {"POST", "PUT", "PATCH"}


def document_plugin_routes(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """Add each route of the plugins enabled now as ``/api/v1/plugins/<name>/<path>``, with
    its summary and JSON Schemas (before the versions hook copies v1 to every version)."""
    plugins_sync_quietly()
    paths = result.setdefault("paths", {})
    for loaded in sorted(loaded_plugins(), key=lambda p: p.name):
        for route in sorted(loaded.routes, key=lambda r: r.path):
            operations = paths.setdefault(f"/api/v1/plugins/{loaded.name}/{route.path}", {})
            slug = re.sub(r"[^A-Za-z0-9]+", "_", f"{loaded.name}_{route.path}").strip("_")
            for method in sorted(route.methods):
                description = f"A route of the plugin `{loaded.name}` {loaded.version}."
                if route.staff_only:
                    description += " Staff only (403 for other accounts)."
                operation: dict[str, Any] = {
                    "operationId": f"plugin_{slug}_{method.lower()}",
                    "summary": route.summary or f"{loaded.name}: {route.path}",
                    "description": description,
                    "tags": ["plugins"],
                    "security": [{"ApiKeyAuth": []}],
                    "responses": {
                        "200": {
                            "description": "The plugin's answer.",
                            "content": {
                                "application/json": {"schema": route.response_schema or {}}
                            },
                        }
                    },
                }
                if method in _BODY_METHODS:
                    operation["requestBody"] = {
                        "required": route.request_schema is not None,
                        "content": {"application/json": {"schema": route.request_schema or {}}},
                    }
                operations[method.lower()] = operation
    return result
