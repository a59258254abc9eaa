"""Platform-wide input rules, declared in the OpenAPI document where they apply.

Every request is refused with 400 ``invalid_characters`` when any text in it (path, query,
form or JSON field names and values) holds a NUL character (``threats.unstorable_fields``:
PostgreSQL cannot store one). The rule holds for every operation, so it is declared once
here, as a ``pattern`` on every free string parameter and request-body string, rather than
in each app's serializers. (Object keys are not declared: ``propertyNames`` on form bodies
made schemathesis expect refusals of form fields the views ignore.)
"""

from __future__ import annotations

from typing import Any

# ECMA-262 and Python regexes alike: any text without NUL.
NO_NUL_PATTERN = "^[^\\x00]*$"
_REF_PREFIX = "#/components/schemas/"
_COMBINATORS = ("anyOf", "oneOf", "allOf")


def _is_free_string(node: dict[str, Any]) -> bool:
    kind = node.get("type")
    is_string = kind == "string" or (isinstance(kind, list) and "string" in kind)
    # Formats (uuid, date-time, binary files), enums and patterns already say what fits.
    return is_string and not ({"pattern", "enum", "const", "format"} & node.keys())


def _declare(node: Any, components: dict[str, Any], seen: set[str]) -> None:
    if isinstance(node, list):
        for item in node:
            _declare(item, components, seen)
        return
    if not isinstance(node, dict):
        return
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith(_REF_PREFIX):
        name = ref[len(_REF_PREFIX) :]
        if name not in seen and name in components:
            seen.add(name)
            _declare(components[name], components, seen)
        return
    if _is_free_string(node):
        node["pattern"] = NO_NUL_PATTERN
    for key in ("properties", "patternProperties"):
        for child in (node.get(key) or {}).values():
            _declare(child, components, seen)
    for key in ("items", "additionalProperties", "not", *_COMBINATORS):
        if key in node:
            _declare(node[key], components, seen)


def declare_storable_text(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: the NUL rule on every request input."""
    components = result.get("components", {}).get("schemas", {})
    seen: set[str] = set()
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or method == "parameters":
                continue
            for parameter in operation.get("parameters", []):
                if isinstance(parameter.get("schema"), dict):
                    _declare(parameter["schema"], components, seen)
            for media in operation.get("requestBody", {}).get("content", {}).values():
                if isinstance(media.get("schema"), dict):
                    _declare(media["schema"], components, seen)
    return result
