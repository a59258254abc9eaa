"""The metadata-filter grammar of ``knowledge.filters``, declared in the OpenAPI document."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import ResolvedComponent
from rest_framework import serializers

from knowledge.filters import ISO_DATE_PATTERN

# A key is a path (dotted); `$` starts an operator, never a key. ECMA and Python alike.
FILTER_KEY_PATTERN = "^[^$\\x00][^\\x00]*$"
_FILTER = "MetadataFilter"
_OPERATORS = "MetadataFilterOperators"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _components() -> dict[str, dict[str, Any]]:
    bound = {"oneOf": [{"type": "number"}, {"type": "string", "pattern": ISO_DATE_PATTERN}]}
    value = {
        "anyOf": [
            # equality (an array: it contains the value)
            {"type": ["string", "number", "boolean", "null", "array"]},
            {"type": "object", "maxProperties": 0},  # equality with {}
            _ref(_OPERATORS),
            _ref(_FILTER),  # nested keys: {"a": {"b": 1}} is {"a.b": 1}
        ]
    }
    return {
        _FILTER: {
            "type": "object",
            "description": 'Paths to values: `{"author": "ann", "year": {"$gte": 2020}, '
            '"a.b": {"$in": [1, 2]}}`. Every condition must hold.',
            "propertyNames": {"pattern": FILTER_KEY_PATTERN},
            "additionalProperties": value,
        },
        _OPERATORS: {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": False,
            "properties": {
                "$in": {"type": "array", "minItems": 1, "description": "Any of these values."},
                **{op: bound for op in ("$gte", "$lte", "$gt", "$lt")},
            },
        },
    }


class MetadataFilterField(serializers.DictField):
    """A metadata filter (``knowledge.filters``); the SQL builder checks it as it goes."""


class MetadataFilterFieldSchema(OpenApiSerializerFieldExtension):
    target_class = MetadataFilterField

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        for name, schema in _components().items():
            component = ResolvedComponent(
                name=name, type=ResolvedComponent.SCHEMA, object=name, schema=schema
            )
            auto_schema.registry.register_on_missing(component)
        return _ref(_FILTER)
