"""A plugin's manifest: the JSON document (``chatter_plugin.json`` in its package) that says
what it is, what it contributes, what it asks for and which Chatter versions it runs on.

Checked with jsonschema before anything of the plugin is imported, on upload and on
discovery alike.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from core.errors import ApplicationError

MANIFEST_FILE = "chatter_plugin.json"
ENTRY_POINT_GROUP = "chatter.plugins"

# The extension points a plugin may contribute to (its `capabilities`).
CAPABILITIES = ("tools", "workflows", "handlers", "subscribers", "middleware", "routes")
# What the core hands a plugin only when it asked for it and an operator granted it.
PERMISSIONS = {
    "network": "outbound HTTP through the platform's guard (ctx.http_get)",
    "knowledge.read": "search the documents of the user a call is made for (ctx.knowledge_search)",
    "conversations.read": "read that user's conversations (ctx.conversation_messages)",
    "events.read": "receive the platform's events (its subscribers)",
}
# A plugin's type names its main contribution: it must declare that capability.
TYPE_CAPABILITY = {
    "tool": "tools",
    "workflow": "workflows",
    "handler": "handlers",
    "middleware": "middleware",
    "integration": None,
    "extension": None,
}
# `plugins/<name>/...` shares its prefix with the management routes.
RESERVED_NAMES = {"install", "health"}
NAME_PATTERN = "^[a-z][a-z0-9_]{1,48}$"
SECRET_MASK = "********"

MANIFEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": [
        "name",
        "version",
        "description",
        "author",
        "license",
        "type",
        "entry_point",
        "capabilities",
        "permissions",
        "config_schema",
        "chatter_versions",
    ],
    "properties": {
        "name": {"type": "string", "pattern": NAME_PATTERN},
        "version": {"type": "string", "minLength": 1, "maxLength": 64},
        "description": {"type": "string", "maxLength": 2000},
        "author": {"type": "string", "maxLength": 200},
        "license": {"type": "string", "maxLength": 100},
        "type": {"enum": list(TYPE_CAPABILITY)},
        "entry_point": {
            "type": "string",
            "pattern": r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$",
            "maxLength": 200,
        },
        "capabilities": {
            "type": "array",
            "items": {"enum": list(CAPABILITIES)},
            "uniqueItems": True,
        },
        "permissions": {
            "type": "array",
            "items": {"enum": sorted(PERMISSIONS)},
            "uniqueItems": True,
        },
        "config_schema": {"type": "object"},
        "chatter_versions": {"type": "string", "minLength": 1, "maxLength": 100},
        "homepage": {"type": "string", "maxLength": 500},
    },
}


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    description: str
    author: str
    license: str
    type: str
    entry_point: str
    capabilities: list[str]
    permissions: list[str]
    config_schema: dict[str, Any]
    chatter_versions: str
    raw: dict[str, Any]

    @property
    def entry_module(self) -> str:
        return self.entry_point.split(":", 1)[0]


def _invalid(message: str, **details: Any) -> ApplicationError:
    return ApplicationError(message, code="invalid_manifest", details=details)


def manifest_parse(raw: Any) -> Manifest:
    """The manifest, checked against MANIFEST_SCHEMA and the rules a schema cannot say
    (a PEP 440 version, a version specifier, a valid configuration schema); a 400
    ``invalid_manifest`` otherwise. Compatibility is checked apart (manifest_check_compatible)."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    errors = sorted(
        Draft202012Validator(MANIFEST_SCHEMA).iter_errors(raw), key=lambda e: list(e.path)
    )
    if errors:
        problems = {
            "/".join(str(part) for part in error.path) or "manifest": [error.message]
            for error in errors
        }
        raise _invalid(f"The plugin manifest is invalid: {errors[0].message}", **problems)
    if raw["name"] in RESERVED_NAMES:
        raise _invalid(f"The name {raw['name']!r} is reserved.", name=["Reserved name."])
    try:
        Version(raw["version"])
    except InvalidVersion:
        raise _invalid("The version is not a PEP 440 version.", version=["Not PEP 440."]) from None
    try:
        SpecifierSet(raw["chatter_versions"])
    except InvalidSpecifier:
        raise _invalid(
            "chatter_versions is not a version specifier (e.g. >=0.1,<1).",
            chatter_versions=["Not a version specifier."],
        ) from None
    schema = raw["config_schema"]
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise _invalid(
            f"config_schema is not a valid JSON Schema: {exc.message}",
            config_schema=[exc.message],
        ) from None
    if schema and schema.get("type", "object") != "object":
        raise _invalid("config_schema must describe an object.", config_schema=["Not an object."])
    needed = TYPE_CAPABILITY[raw["type"]]
    if needed and needed not in raw["capabilities"]:
        raise _invalid(
            f"A {raw['type']} plugin declares the {needed!r} capability.",
            capabilities=[f"{needed!r} is missing."],
        )
    return Manifest(
        name=raw["name"],
        version=raw["version"],
        description=raw["description"],
        author=raw["author"],
        license=raw["license"],
        type=raw["type"],
        entry_point=raw["entry_point"],
        capabilities=list(raw["capabilities"]),
        permissions=list(raw["permissions"]),
        config_schema=schema,
        chatter_versions=raw["chatter_versions"],
        raw=copy.deepcopy(raw),
    )


def manifest_check_compatible(manifest: Manifest) -> None:
    """A 400 ``incompatible_version`` unless this Chatter's version is in the plugin's range."""
    running = settings.CHATTER_VERSION
    if not SpecifierSet(manifest.chatter_versions).contains(Version(running), prereleases=True):
        raise ApplicationError(
            f"{manifest.name} {manifest.version} needs Chatter {manifest.chatter_versions}; "
            f"this is Chatter {running}.",
            code="incompatible_version",
            details={"chatter_versions": [manifest.chatter_versions], "chatter": running},
        )


# --- configuration --------------------------------------------------------------------------
def config_errors(schema: dict[str, Any], config: Any) -> dict[str, list[str]]:
    """Where ``config`` breaks ``schema``: {path: [messages]}, empty when it fits."""
    return schema_errors(schema or {"type": "object"}, config, root="config")


def schema_errors(schema: dict[str, Any], value: Any, *, root: str) -> dict[str, list[str]]:
    """Where ``value`` breaks the JSON Schema ``schema``: {path: [messages]} (``root`` for
    the value itself), empty when it fits."""
    from jsonschema import Draft202012Validator

    errors: dict[str, list[str]] = {}
    for error in Draft202012Validator(schema).iter_errors(value):
        where = "/".join(str(part) for part in error.path) or root
        errors.setdefault(where, []).append(error.message)
    return errors


def _is_secret(schema: Any) -> bool:
    return isinstance(schema, dict) and (
        schema.get("writeOnly") is True or schema.get("format") == "password"
    )


def config_masked(schema: dict[str, Any], config: Any) -> Any:
    """``config`` with every secret (a property whose schema says ``writeOnly: true`` or
    ``format: password``, at any depth of objects) replaced by SECRET_MASK."""
    if not isinstance(config, dict) or not isinstance(schema, dict):
        return config
    properties = schema.get("properties") or {}
    masked: dict[str, Any] = {}
    for key, value in config.items():
        sub = properties.get(key)
        if _is_secret(sub) and value not in (None, ""):
            masked[key] = SECRET_MASK
        elif isinstance(sub, dict) and isinstance(value, dict):
            masked[key] = config_masked(sub, value)
        else:
            masked[key] = value
    return masked


def config_unmasked(schema: dict[str, Any], new: Any, current: Any) -> Any:
    """``new`` with each secret sent back as SECRET_MASK replaced by its current value, so a
    form or client that shows the masked configuration can save it unchanged."""
    if not isinstance(new, dict) or not isinstance(schema, dict):
        return new
    current = current if isinstance(current, dict) else {}
    properties = schema.get("properties") or {}
    result: dict[str, Any] = {}
    for key, value in new.items():
        sub = properties.get(key)
        if _is_secret(sub) and value == SECRET_MASK and key in current:
            result[key] = current[key]
        elif isinstance(sub, dict) and isinstance(value, dict):
            result[key] = config_unmasked(sub, value, current.get(key))
        else:
            result[key] = value
    return result


def config_secret_paths(schema: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted paths of the secrets a configuration schema declares."""
    paths: list[str] = []
    for key, sub in (schema.get("properties") or {}).items() if isinstance(schema, dict) else ():
        path = f"{prefix}{key}"
        if _is_secret(sub):
            paths.append(path)
        elif isinstance(sub, dict):
            paths.extend(config_secret_paths(sub, f"{path}."))
    return paths
