"""What the conversations API's OpenAPI document says beyond its serializers' fields."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerExtension, OpenApiSerializerFieldExtension

from conversations.providers import spec_pattern
from core.validation import StrictCharField


class ModelSpecField(StrictCharField):
    """`provider:model`; its schema names the providers this deployment knows."""


class ModelSpecFieldSchema(OpenApiSerializerFieldExtension):
    target_class = ModelSpecField

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        if direction != "request":  # a stored spec may name a provider since removed
            return schema
        if "oneOf" in schema:  # allow_blank: [the spec, ""]
            first, *rest = schema["oneOf"]
            return {**schema, "oneOf": [{**first, "pattern": spec_pattern()}, *rest]}
        return {**schema, "pattern": spec_pattern()}


class FeedbackSchema(OpenApiSerializerExtension):
    """Each scale's ratings, and the ratings that name their scale when it is left out."""

    target_class = "conversations.api.FeedbackSerializer"

    def map_serializer(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        schema = auto_schema._map_basic_serializer(self.target, direction)
        return {
            **schema,
            "oneOf": [
                {
                    "required": ["scale"],
                    "properties": {
                        "scale": {"type": "string", "const": "thumbs"},
                        "rating": {"type": "integer", "minimum": -1, "maximum": 1},
                    },
                },
                {
                    "required": ["scale"],
                    "properties": {
                        "scale": {"type": "string", "const": "stars"},
                        "rating": {"type": "integer", "minimum": 1, "maximum": 5},
                    },
                },
                {
                    "not": {"required": ["scale"]},
                    "properties": {
                        "rating": {
                            "type": "integer",
                            "minimum": -1,
                            "maximum": 5,
                            "not": {"const": 1},
                        }
                    },
                },
            ],
        }
