"""Platform-wide input rules, declared in the OpenAPI document where they apply.

Why and how: docs/architecture.md, "web/schema_rules.py".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# ECMA-262 and Python regexes alike: any text without NUL.
NO_NUL_PATTERN = "^[^\\x00]*$"
# In OAS 3.1 a `format` is an annotation, not a constraint: a client (or schemathesis) may
# send "" as a date-time. Request date-times declare what the API parses: RFC 3339 with
# seconds and an offset, years 0002-9998 (a day either side overflows in time-zone arithmetic),
# days to the 28th so that every matching string is a real date (the 29th-31st are
# accepted all the same).
DATE_TIME_PATTERN = (
    r"^(?:000[2-9]|00[1-9]\d|0[1-9]\d{2}|[1-8]\d{3}|9[0-8]\d{2}|99[0-8]\d|999[0-8])"
    r"-(?:0[1-9]|1[0-2])-(?:0[1-9]|1\d|2[0-8])"
    r"T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,6})?(?:Z|[+-](?:0\d|1[0-3]):[0-5]\d)$"
)
_REF_PREFIX = "#/components/schemas/"
_COMBINATORS = ("anyOf", "oneOf", "allOf")


def _is_string(node: dict[str, Any]) -> bool:
    kind = node.get("type")
    return kind == "string" or (isinstance(kind, list) and "string" in kind)


def _is_free_string(node: dict[str, Any]) -> bool:
    # Formats (uuid, date-time, binary files), enums and patterns already say what fits.
    return _is_string(node) and not ({"pattern", "enum", "const", "format"} & node.keys())


def _walk(
    node: Any, components: dict[str, Any], seen: set[str], visit: Callable[[dict[str, Any]], None]
) -> None:
    """Call ``visit`` on every schema below ``node``, following each component once."""
    if isinstance(node, list):
        for item in node:
            _walk(item, components, seen, visit)
        return
    if not isinstance(node, dict):
        return
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith(_REF_PREFIX):
        name = ref[len(_REF_PREFIX) :]
        if name not in seen and name in components:
            seen.add(name)
            _walk(components[name], components, seen, visit)
        return
    visit(node)
    for key in ("properties", "patternProperties"):
        for child in (node.get(key) or {}).values():
            _walk(child, components, seen, visit)
    for key in ("items", "additionalProperties", "not", *_COMBINATORS):
        if key in node:
            _walk(node[key], components, seen, visit)


def _declare_text(node: dict[str, Any]) -> None:
    if _is_free_string(node):
        node["pattern"] = NO_NUL_PATTERN
    elif _is_string(node) and node.get("format") == "date-time" and "pattern" not in node:
        node["pattern"] = DATE_TIME_PATTERN


def _declare_keys(node: dict[str, Any]) -> None:
    """JSON bodies: object keys are text too (the scanner refuses a NUL in any of them).
    Form bodies are left alone: a form field's name is not a property the views read."""
    kind = node.get("type")
    if kind == "object" or (isinstance(kind, list) and "object" in kind) or "properties" in node:
        node.setdefault("propertyNames", {"pattern": NO_NUL_PATTERN})


def _closed(node: dict[str, Any], components: dict[str, Any], seen: set[str] | None = None) -> None:
    """A request body's own fields are all it may hold (``RejectUnknownFields``; Ninja's
    input schemas forbid extras), and so are the serializers nested in it (an agent's
    capabilities); free-form objects (metadata, job args) stay open."""
    seen = set() if seen is None else seen
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith(_REF_PREFIX):
        name = ref[len(_REF_PREFIX) :]
        if name in seen:
            return
        seen.add(name)
        node = components.get(name, {})
    if "properties" not in node:
        return
    node.setdefault("additionalProperties", False)
    for child in node["properties"].values():
        for nested in (child, child.get("items", {})):
            if isinstance(nested, dict) and "$ref" in nested:
                _closed(nested, components, seen)


STORABLE_JSON = "StorableJson"
_STORABLE_REF = {"$ref": f"{_REF_PREFIX}{STORABLE_JSON}"}


def _storable_json() -> dict[str, Any]:
    """Any JSON value PostgreSQL can store: no NUL in a string or a key, at any depth. One
    node with every type and each type's keywords (``pattern`` binds strings, ``items``
    arrays, ...), not an ``anyOf`` per type, whose branches a negative test would mutate into
    one another (an array turned into a boolean is still storable)."""
    return {
        "description": "Any JSON value without NUL characters (in strings or keys).",
        "type": ["string", "number", "boolean", "null", "array", "object"],
        "pattern": NO_NUL_PATTERN,
        "items": _STORABLE_REF,
        "propertyNames": {"pattern": NO_NUL_PATTERN},
        "additionalProperties": _STORABLE_REF,
    }


def _declare_open(node: dict[str, Any]) -> None:
    """Free-form parts of a body (job args, an equality value in a filter) hold storable JSON:
    the scanner refuses a NUL anywhere, so the schema says so at every depth."""
    extra = node.get("additionalProperties")
    if extra is True or extra == {}:
        node["additionalProperties"] = dict(_STORABLE_REF)
    kind = node.get("type")
    if (kind == "array" or (isinstance(kind, list) and "array" in kind)) and not node.get("items"):
        node["items"] = dict(_STORABLE_REF)


def declare_storable_text(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: the NUL rule on every request input, and request
    bodies closed to fields they do not declare."""
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components[STORABLE_JSON] = _storable_json()
    seen: set[str] = set()
    seen_keys: set[str] = set()
    seen_open: set[str] = {STORABLE_JSON}
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or method == "parameters":
                continue
            for parameter in operation.get("parameters", []):
                if isinstance(parameter.get("schema"), dict):
                    _walk(parameter["schema"], components, seen, _declare_text)
            for media_type, media in operation.get("requestBody", {}).get("content", {}).items():
                if isinstance(media.get("schema"), dict):
                    _closed(media["schema"], components)
                    _walk(media["schema"], components, seen_open, _declare_open)
                    _walk(media["schema"], components, seen, _declare_text)
                    if media_type == "application/json":
                        _walk(media["schema"], components, seen_keys, _declare_keys)
    return result
