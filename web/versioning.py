"""API versions: chosen by URL (`/api/v2/...`), else by `X-API-Version: 2` or
`Accept: application/json; version=2`, else the default. The URL wins; a header that
disagrees with it is a 400. Every version is served by the same views: the middleware
routes `/api/vN/...` to them and records ``request.api_version``; what differs per version
(v2: RFC 9457 problem details, cursor pagination) keys off that attribute.

Why and how: docs/architecture.md, "web/versioning.py".
"""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.core import checks
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, resolve
from django.utils.http import http_date

from core.errors import error_response
from web.middleware import GateMiddleware

SERVED_PREFIX = "/api/v1/"  # the URL conf mounts every version's views here
_URL_VERSION = re.compile(r"^/api/v(\d+)/")
_ACCEPT_VERSION = re.compile(r"(?:^|;)\s*version\s*=\s*\"?(\d+)\"?", re.IGNORECASE)
PROBLEM_CONTENT_TYPE = "application/problem+json"


def _resolves(path: str, request: HttpRequest) -> bool:
    try:
        resolve(path, urlconf=getattr(request, "urlconf", None))
    except Resolver404:
        return False
    return True


def _header_version(request: HttpRequest) -> str | None:
    explicit = request.headers.get("X-API-Version", "").strip().lstrip("vV")
    accepted = _ACCEPT_VERSION.search(request.headers.get("Accept", ""))
    from_accept = accepted.group(1) if accepted else None
    if explicit and from_accept and explicit != from_accept:
        return "conflict"
    return explicit or from_accept


def _when(value: str | None) -> datetime | None:
    if not value:
        return None
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@checks.register()
def check_versions(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """CHATTER_API_VERSIONS must be usable before a request finds out otherwise."""
    errors: list[checks.CheckMessage] = []
    versions = settings.CHATTER_API_VERSIONS
    if settings.CHATTER_API_DEFAULT_VERSION not in versions:
        errors.append(checks.Error("CHATTER_API_DEFAULT_VERSION is not a declared version."))
    for version, info in versions.items():
        where = f"CHATTER_API_VERSIONS[{version!r}]"
        if info.get("status") not in ("active", "deprecated", "sunset"):
            errors.append(checks.Error(f"{where}: status must be active, deprecated or sunset."))
        if info.get("status") == "deprecated" and not info.get("deprecated_at"):
            errors.append(checks.Error(f"{where}: a deprecated version needs deprecated_at."))
        if info.get("successor") and info["successor"] not in versions:
            errors.append(checks.Error(f"{where}: its successor is not a declared version."))
        for field in ("deprecated_at", "sunset_at"):
            try:
                _when(info.get(field))
            except (TypeError, ValueError):
                errors.append(checks.Error(f"{where}: {field} is not an ISO 8601 date."))
    return errors


def version_info(version: str) -> dict[str, Any] | None:
    return settings.CHATTER_API_VERSIONS.get(version)


def served_versions() -> list[str]:
    """Versions still answered (everything not sunset), oldest first."""
    return sorted(
        (v for v, info in settings.CHATTER_API_VERSIONS.items() if info["status"] != "sunset"),
        key=int,
    )


def _successor_link(info: dict[str, Any]) -> dict[str, str]:
    successor = info.get("successor")
    return {"Link": f'</api/v{successor}/>; rel="successor-version"'} if successor else {}


def resolve_version(request: HttpRequest) -> tuple[str | None, HttpResponse | None]:
    """(the version, None) or (None, the error to answer with)."""
    from_url = _URL_VERSION.match(request.path_info)
    from_header = _header_version(request)
    if from_header == "conflict":
        return None, error_response(
            400, "version_conflict", "X-API-Version and Accept ask for different versions."
        )
    if from_url and from_header and from_url.group(1) != from_header:
        return None, error_response(
            400,
            "version_conflict",
            f"The URL asks for version {from_url.group(1)}, a header for {from_header}.",
            details={"url": from_url.group(1), "header": from_header},
        )
    version = (
        from_url.group(1) if from_url else from_header
    ) or settings.CHATTER_API_DEFAULT_VERSION
    info = version_info(version)
    if info is None:
        known = ", ".join(sorted(settings.CHATTER_API_VERSIONS, key=int))
        return None, error_response(
            404 if from_url else 406,
            "not_found" if from_url else "unknown_version",
            f"There is no API version {version} (known: {known}).",
        )
    if info["status"] == "sunset":
        return None, error_response(
            410,
            "version_sunset",
            f"API version {version} was retired"
            + (f" on {info['sunset_at']}" if info.get("sunset_at") else "")
            + (f"; use version {info['successor']}." if info.get("successor") else "."),
            headers={"API-Version": version, **_successor_link(info)},
        )
    return version, None


def problem_response(response: HttpResponse, request: HttpRequest) -> HttpResponse:
    """The error envelope re-expressed as RFC 9457 problem details (v2)."""
    try:
        error = json.loads(response.content)["error"]
    except (ValueError, KeyError, TypeError):
        return response
    status = response.status_code
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    problem: dict[str, Any] = {
        "type": f"urn:chatter:problem:{error.get('code', 'error')}",
        "title": title,
        "status": status,
        "detail": error.get("message", title),
        "instance": request.path,
        "code": error.get("code", "error"),
    }
    if error.get("details"):
        problem["errors"] = error["details"]
    converted = HttpResponse(json.dumps(problem), status=status, content_type=PROBLEM_CONTENT_TYPE)
    for name, value in response.items():
        if name.lower() not in ("content-type", "content-length"):
            converted[name] = value
    return converted


def _is_error_envelope(response: HttpResponse) -> bool:
    return (
        response.status_code >= 400
        and not getattr(response, "streaming", False)
        and response.get("Content-Type", "").startswith("application/json")
    )


def client_path(request: HttpRequest, served_path: str) -> str:
    """``served_path`` (as ``reverse`` gives it, under /api/v1/) the way this request
    addressed the API: a link handed to a client that came by /api/v2/ (or by /api/ and a
    header) keeps it there, so that following it gets the same version."""
    if not request.path_info.startswith(SERVED_PREFIX):
        return served_path
    route = request.path_info[len(SERVED_PREFIX) :]
    served_prefix = request.META.get("SCRIPT_NAME", "").rstrip("/") + SERVED_PREFIX
    if not request.path.endswith(route) or not served_path.startswith(served_prefix):
        return served_path
    return request.path[: len(request.path) - len(route)] + served_path[len(served_prefix) :]


class ApiVersionMiddleware(GateMiddleware):
    blocking = False  # headers and the URL resolver only

    def check(self, request: HttpRequest) -> HttpResponse | None:
        if not request.path_info.startswith("/api/"):
            return None
        version, refused = resolve_version(request)
        if refused is not None:
            return refused
        request.api_version = version  # type: ignore[attr-defined]
        path = request.path_info
        if _URL_VERSION.match(path):
            request.path_info = SERVED_PREFIX + path[_URL_VERSION.match(path).end() :]  # type: ignore[union-attr]
        elif not _resolves(path, request):
            # /api/conversations/ → the version the headers (or the default) chose. Paths
            # mounted outside the versions (/api/schema/, /api/openai/v1/...) resolve as they are.
            request.path_info = SERVED_PREFIX + path[len("/api/") :]
        return None

    def decorate(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        version = getattr(request, "api_version", None)
        if version is None:
            return response
        if version == "2" and _is_error_envelope(response):
            response = problem_response(response, request)
        response["API-Version"] = version
        info = version_info(version) or {}
        if info.get("status") == "deprecated":
            deprecated_at = _when(info.get("deprecated_at"))
            if deprecated_at:  # required by the system check; RFC 9745's "@<epoch>" form
                response["Deprecation"] = f"@{int(deprecated_at.timestamp())}"
            sunset_at = _when(info.get("sunset_at"))
            if sunset_at:
                response["Sunset"] = http_date(sunset_at.timestamp())  # RFC 8594
            for name, value in _successor_link(info).items():
                response[name] = value
        return response


def api_version(request: Any) -> str:
    """The version of a request (DRF's or Django's), the default when none was chosen."""
    django_request = getattr(request, "_request", request)
    return getattr(django_request, "api_version", settings.CHATTER_API_DEFAULT_VERSION)


# --- the OpenAPI document: every served version, each with its own error and list shapes -----
_ENVELOPE = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {},
            },
            "required": ["code", "message", "details"],
        }
    },
    "required": ["error"],
}
_PROBLEM = {
    "type": "object",
    "description": "RFC 9457 problem details.",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "code": {"type": "string"},
        "errors": {},
    },
    "required": ["type", "title", "status", "code"],
}
_PAGINATED_REF = re.compile(r"^#/components/schemas/(Paginated\w+List)$")


def _for_version(node: Any, cursor_refs: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and _PAGINATED_REF.match(value):
                name = _PAGINATED_REF.match(value).group(1)  # type: ignore[union-attr]
                cursor_refs[name] = f"Cursor{name}"
                out[key] = f"#/components/schemas/Cursor{name}"
            else:
                out[key] = _for_version(value, cursor_refs)
        return out
    if isinstance(node, list):
        return [_for_version(item, cursor_refs) for item in node]
    return node


def _error_response(schema_name: str, content_type: str) -> dict[str, Any]:
    return {
        "description": "An error",
        "content": {content_type: {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}},
    }


def document_versions(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """drf-spectacular postprocessing hook (after the Ninja merge): copies the v1 paths to
    every other served version, with v2's cursor lists and problem+json errors."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["ErrorEnvelope"] = _ENVELOPE
    schemas["Problem"] = _PROBLEM
    v1_paths = {k: v for k, v in result["paths"].items() if k.startswith(SERVED_PREFIX)}
    paths = {k: v for k, v in result["paths"].items() if not k.startswith(SERVED_PREFIX)}
    for version in served_versions():
        info = version_info(version) or {}
        cursor_refs: dict[str, str] = {}
        for path_key, operations in v1_paths.items():
            operations = copy.deepcopy(operations)
            if version == "2":
                operations = _for_version(operations, cursor_refs)
            for method, operation in operations.items():
                if not isinstance(operation, dict) or method == "parameters":
                    continue
                if version != "1":
                    operation["operationId"] = f"{operation['operationId']}_v{version}"
                if version == "2":
                    for parameter in operation.get("parameters", []):
                        if parameter.get("in") == "query" and parameter.get("name") == "page":
                            parameter.update(name="cursor", description="The cursor value.")
                            parameter["schema"] = {"type": "string"}
                operation["responses"].setdefault(
                    "default",
                    _error_response("Problem", PROBLEM_CONTENT_TYPE)
                    if version == "2"
                    else _error_response("ErrorEnvelope", "application/json"),
                )
                if info.get("status") == "deprecated":
                    operation["deprecated"] = True
            paths[f"/api/v{version}/" + path_key[len(SERVED_PREFIX) :]] = operations
        for name, cursor_name in cursor_refs.items():
            cursor = copy.deepcopy(schemas[name])
            cursor["properties"].pop("count", None)
            cursor["required"] = [r for r in cursor.get("required", []) if r != "count"]
            schemas[cursor_name] = cursor
    result["paths"] = dict(sorted(paths.items()))
    return result
