"""Input rules for every app: plain functions and the DRF fields built on them.

Why and how: docs/architecture.md, "core/validation.py".
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.validators import RegexValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import exceptions, serializers
from rest_framework.utils import html

# C0 and C1 controls, DEL; tab/newline/CR are kept in multi-line text only.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_CONTROL_ALL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SLUG = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$")
_METADATA_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$")
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10))} | {
    f"lpt{i}" for i in range(1, 10)
}

MAX_JSON_DEPTH = 8
MAX_JSON_BYTES = 64 * 1024
MAX_METADATA_KEYS = 50
MAX_METADATA_DEPTH = 3
MAX_METADATA_STRING = 2000


class InvalidInput(ValueError):
    """A rule violation; the message is shown to the client under the field's name."""


# --- normalization -------------------------------------------------------------------------
def normalize_line(value: str) -> str:
    """One-line structured value: every control character removed, NFC, outer space trimmed."""
    return unicodedata.normalize("NFC", _CONTROL_ALL.sub("", value)).strip()


def normalize_text(value: str) -> str:
    """Multi-line structured text (titles, descriptions): keeps tab and newlines."""
    return unicodedata.normalize("NFC", _CONTROL.sub("", value))


# --- rules ---------------------------------------------------------------------------------
def validate_slug(value: str, *, max_length: int = 64) -> str:
    value = normalize_line(value)
    if len(value) > max_length or not _SLUG.match(value):
        raise InvalidInput("Use lowercase letters, digits and single - or _ between them.")
    return value


def validate_url(value: str, *, max_length: int = 2048) -> str:
    """An absolute http(s) URL with a host and no embedded credentials."""
    value = normalize_line(value)
    if len(value) > max_length:
        raise InvalidInput(f"At most {max_length} characters.")
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise InvalidInput("Enter a valid URL.") from exc
    if parts.scheme not in ("http", "https"):
        raise InvalidInput("Only http and https URLs are allowed.")
    if not parts.hostname:
        raise InvalidInput("The URL needs a host.")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("URLs must not carry credentials.")
    if port == 0 or any(c.isspace() for c in value):
        raise InvalidInput("Enter a valid URL.")
    return value


def validate_filename(value: str, *, max_length: int = 255) -> str:
    """A bare file name: no directories, no traversal, no control characters."""
    if _CONTROL_ALL.search(value):
        raise InvalidInput("File names must not contain control characters.")
    value = unicodedata.normalize("NFC", value).strip()
    if not value or len(value) > max_length:
        raise InvalidInput(f"Use 1-{max_length} characters.")
    if value in (".", "..") or "/" in value or "\\" in value or ".." in value:
        raise InvalidInput("File names must not contain paths or '..'.")
    if PurePosixPath(value).name != value or PureWindowsPath(value).name != value:
        raise InvalidInput("File names must not contain paths.")
    if value.split(".")[0].lower() in _WINDOWS_RESERVED or value.endswith((".", " ")):
        raise InvalidInput("This file name is reserved.")
    return value


# What a message must hold, as the OpenAPI document declares it: no NUL, and one character
# that is not blank. (Python's and ECMA-262's \s differ: both sets are listed, so the
# server and a client validating with the schema agree on every string.)
MESSAGE_CONTENT_PATTERN = r"^[^\x00]*[^\x00\s\x1c-\x1f\x85\ufeff][^\x00]*$"
_MESSAGE_CONTENT = re.compile(MESSAGE_CONTENT_PATTERN)


def validate_message_content(value: str) -> str:
    """Chat content: non-blank and within the configured length; never altered."""
    if "\x00" in value:
        raise InvalidInput("Messages must not contain NUL characters.")
    if not _MESSAGE_CONTENT.match(value):
        raise InvalidInput("A message cannot be empty.")
    limit = settings.CHATTER_MAX_MESSAGE_CHARS
    if len(value) > limit:
        raise InvalidInput(f"At most {limit} characters.")
    return value


def validate_text(value: str, *, max_length: int = 10_000) -> str:
    """Structured multi-line text (titles, descriptions, prompts): normalized, bounded."""
    value = normalize_text(value)
    if len(value) > max_length:
        raise InvalidInput(f"At most {max_length} characters.")
    return value


def json_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((json_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((json_depth(v) for v in value), default=0)
    return 0


def validate_json(
    value: Any, *, max_depth: int = MAX_JSON_DEPTH, max_bytes: int = MAX_JSON_BYTES
) -> Any:
    """Any JSON value, bounded in nesting depth and encoded size."""
    if json_depth(value) > max_depth:
        raise InvalidInput(f"Nested deeper than {max_depth} levels.")
    try:
        size = len(json.dumps(value, ensure_ascii=False).encode())
    except (TypeError, ValueError) as exc:
        raise InvalidInput("Not a JSON value.") from exc
    if size > max_bytes:
        raise InvalidInput(f"Larger than {max_bytes} bytes encoded.")
    return value


def _metadata_value(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        if len(value) > MAX_METADATA_STRING:
            raise InvalidInput(f"Strings are at most {MAX_METADATA_STRING} characters.")
        return normalize_text(value)
    if isinstance(value, bool | int | float) or value is None:
        if isinstance(value, float) and value != value:  # NaN is not JSON
            raise InvalidInput("NaN is not allowed.")
        return value
    if depth >= MAX_METADATA_DEPTH:
        raise InvalidInput(f"Nested deeper than {MAX_METADATA_DEPTH} levels.")
    if isinstance(value, list):
        return [_metadata_value(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return _metadata_dict(value, depth + 1)
    raise InvalidInput("Values must be strings, numbers, booleans, null, lists or objects.")


def _metadata_dict(value: dict[Any, Any], depth: int) -> dict[str, Any]:
    if len(value) > MAX_METADATA_KEYS:
        raise InvalidInput(f"At most {MAX_METADATA_KEYS} keys.")
    cleaned: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _METADATA_KEY.match(key):
            raise InvalidInput(
                f"Invalid key {str(key)[:40]!r}: 1-64 letters, digits and _ . : - "
                "(not starting with . : -)."
            )
        cleaned[key] = _metadata_value(item, depth)
    return cleaned


def json_object(value: Any) -> dict[Any, Any]:
    """A JSON object (metadata, a multipart part holding one), nothing else."""
    if not isinstance(value, dict):
        raise InvalidInput("Must be a JSON object.")
    return value


def validate_metadata(value: Any) -> dict[str, Any]:
    """A flat-ish JSON object: safe keys, scalar/list/object values, bounded depth and size."""
    return validate_json(_metadata_dict(json_object(value), 1))


# --- DRF fields ----------------------------------------------------------------------------
class _StrictString:
    """JSON types as declared: DRF's own fields would turn 123 into "123"."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid")  # type: ignore[attr-defined]
        return super().to_internal_value(data)  # type: ignore[misc]


class _StrictNumber:
    """JSON types as declared: DRF's own fields would turn "5" into 5 and true into 1."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")  # type: ignore[attr-defined]
        return super().to_internal_value(data)  # type: ignore[misc]


class StrictIntegerField(_StrictNumber, serializers.IntegerField):
    pass


class StrictFloatField(_StrictNumber, serializers.FloatField):
    pass


def require_json_body(request: Any) -> None:
    """415 for a body that is not JSON. (parser_classes alone is not enough: a multipart
    body already read by a middleware reaches DRF as no data at all, and would pass.)"""
    media_type = (request.content_type or "").split(";")[0].strip().lower()
    if not media_type and request.META.get("CONTENT_LENGTH") in (None, "", "0"):
        return  # no body at all: nothing to read, the fields keep their defaults
    if media_type != "application/json":
        raise exceptions.UnsupportedMediaType(media_type or "none")


def _drf(rule: Callable[..., Any]) -> Callable[[Any], Any]:
    def run(value: Any) -> Any:
        try:
            return rule(value)
        except InvalidInput as exc:
            raise serializers.ValidationError(str(exc)) from exc

    return run


# A text that is not blank once normalized, as a regex for both Python and ECMA (the schema):
# one character that normalize_line keeps (not a control character, not whitespace; \ufeff
# is whitespace to ECMA only), or that normalize_text keeps (tab and newlines too).
VISIBLE_LINE_PATTERN = r"^[^\x00]*(?:[^\x00-\x1f\x7f-\x9f\s]|\ufeff)[^\x00]*$"
VISIBLE_TEXT_PATTERN = r"^[^\x00]*[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f][^\x00]*$"


class _RuleCharField(serializers.CharField):
    rule: Callable[[str], str] = staticmethod(normalize_line)
    visible: str = VISIBLE_LINE_PATTERN

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not self.allow_blank:  # declared as the schema's `pattern`; always true once cleaned
            self.validators.append(RegexValidator(self.visible))

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        if value == "" and self.allow_blank:
            return value
        value = _drf(self.rule)(value)
        if value == "" and not self.allow_blank:
            self.fail("blank")
        return value


class SafeCharField(_RuleCharField):
    """One-line structured text: controls stripped, NFC."""


class SafeTextField(_RuleCharField):
    """Multi-line structured text (title, prompt): controls but newlines stripped, NFC."""

    rule = staticmethod(validate_text)
    visible = VISIBLE_TEXT_PATTERN

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)
        if self.max_length is not None:  # the declared limit is the one the rule applies
            self.rule = functools.partial(validate_text, max_length=self.max_length)


class MessageContentField(serializers.CharField):
    """Chat content: length-checked, stored exactly as sent."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        kwargs.setdefault("max_length", settings.CHATTER_MAX_MESSAGE_CHARS)
        super().__init__(**kwargs)
        # Declares the rule in the schema (drf-spectacular reads it as `pattern`); the
        # rule itself, with its own wording, runs first in to_internal_value.
        self.validators.append(RegexValidator(MESSAGE_CONTENT_PATTERN))

    def to_internal_value(self, data: Any) -> str:
        return _drf(validate_message_content)(super().to_internal_value(data))


class NullableDateTimeField(serializers.DateTimeField):
    """A nullable date-time that means the same in JSON and in forms: a form has no null,
    so both an empty value and the text `null` are null there (DRF refuses the latter)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_null", True)
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def get_value(self, dictionary: Any) -> Any:
        if html.is_html_input(dictionary) and dictionary.get(self.field_name) == "null":
            return None
        return super().get_value(dictionary)


def _metadata_schema(levels: int) -> dict[str, Any]:
    """What ``validate_metadata`` accepts, as JSON Schema: objects and lists nest ``levels``
    deep below the top object, strings are bounded, keys follow the key rule.

    Each value is one node listing its types, with each type's keywords beside them
    (``maxLength`` binds only strings, ``items`` only arrays, ...), not an ``anyOf`` of one
    branch per type: the same values, and a schema-breaking mutation of one branch (an
    array turned into a boolean) can no longer land in another branch and pass for invalid.
    """
    scalars = ["string", "number", "boolean", "null"]
    value: dict[str, Any] = {"type": scalars, "maxLength": MAX_METADATA_STRING}
    for _ in range(levels):
        value = {
            **_metadata_object(value),
            "type": [*scalars, "array", "object"],
            "maxLength": MAX_METADATA_STRING,
            "items": value,
        }
    return _metadata_object(value)


def _metadata_object(values: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "maxProperties": MAX_METADATA_KEYS,
        "propertyNames": {"pattern": _METADATA_KEY.pattern},
        "additionalProperties": values,
    }


METADATA_SCHEMA = _metadata_schema(MAX_METADATA_DEPTH - 1)


@extend_schema_field(METADATA_SCHEMA)
class MetadataField(serializers.DictField):
    """A metadata object (see ``validate_metadata``)."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        return _drf(validate_metadata)(super().to_internal_value(data))


class StrictCharField(_StrictString, SafeCharField):
    pass


class StrictTextField(_StrictString, SafeTextField):
    pass


class StrictMessageContentField(_StrictString, MessageContentField):
    pass


class RejectUnknownFields:
    # A request body may hold only the serializer's fields: a misspelt one ("temprature") is
    # a 400 naming it, not a silent drop. Read-only fields sent back from a GET are accepted
    # and ignored, as DRF does. The OpenAPI document says so (``additionalProperties: false``).
    # (A comment, not a docstring: the OpenAPI document would show it on every body.)

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(str(key) for key in data if key not in self.fields)  # type: ignore[attr-defined]
            if unknown:
                raise exceptions.ValidationError({key: ["Unknown field."] for key in unknown})
        return super().to_internal_value(data)  # type: ignore[misc]
