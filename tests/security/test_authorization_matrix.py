"""Every operation in the OpenAPI document, checked for who may call it.

The operations come from /api/schema/, so endpoints that apps add later are included without
editing this file; an object endpoint whose resource has no factory below fails loudly
(add one: a function that makes an object owned by a user and returns its id).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import Resolver404, resolve
from django.utils import timezone

from accounts.models import ApiKey, User
from accounts.permissions import IsStaff
from accounts.services import api_key_create, api_key_revoke

# transaction=True: the streaming endpoint hands its connection back to the pool mid-request.
pytestmark = pytest.mark.django_db(transaction=True)
_PARAM = re.compile(r"\{([^}]+)\}")


def _schema() -> dict[str, Any]:
    return Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()


def _operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, operations in schema["paths"].items():
        if not path.startswith("/api/v1/"):  # other versions route to the same views
            continue
        for method, operation in operations.items():
            if isinstance(operation, dict) and method != "parameters":
                yield method, path, operation


def _body(schema: dict[str, Any], operation: dict[str, Any]) -> dict[str, Any]:
    """A minimal valid-looking JSON body: the required properties with plain values."""
    content = operation.get("requestBody", {}).get("content", {})
    media = content.get("application/json", {}).get("schema", {})
    if "$ref" in media:
        media = schema["components"]["schemas"][media["$ref"].split("/")[-1]]
    body: dict[str, Any] = {}
    for name in media.get("required", []):
        prop = media.get("properties", {}).get(name, {})
        if "$ref" in prop:
            prop = schema["components"]["schemas"][prop["$ref"].split("/")[-1]]
        kind, fmt = prop.get("type"), prop.get("format")
        body[name] = (
            prop["enum"][0]
            if prop.get("enum")
            else str(uuid.uuid4())
            if fmt == "uuid"
            else 1
            if kind in ("integer", "number")
            else True
            if kind == "boolean"
            else []
            if kind == "array"
            else {}
            if kind == "object"
            else "hello"
        )
    return body


def _call(client: Client, method: str, path: str, body: dict[str, Any], key: str) -> Any:
    return getattr(client, method)(
        path,
        data=body if method != "get" else None,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )


SCHEMA_CACHE: dict[str, Any] = {}


@pytest.fixture
def schema() -> dict[str, Any]:
    if "schema" not in SCHEMA_CACHE:
        SCHEMA_CACHE["schema"] = _schema()
    return SCHEMA_CACHE["schema"]


def _fill(path: str, user: User, factories: dict[str, Callable[..., str]]) -> str:
    segments = path.split("/")
    parent = None
    for index, segment in enumerate(segments):
        if _PARAM.fullmatch(segment):
            resource = segments[index - 1]
            factory = factories.get(resource)
            if factory is None:
                pytest.fail(f"{path}: no factory for {resource!r}; add one in conftest.py")
            parent = segments[index] = factory(user) if parent is None else factory(user, parent)
    return "/".join(segments)


def test_another_users_object_is_a_404_everywhere(schema, user, other_user, object_factories):
    _, other_key = api_key_create(user=other_user, name="intruder")
    checked = []
    for method, path, operation in _operations(schema):
        # Staff-only operations refuse a non-staff key before any object (a 403, below).
        if not _PARAM.search(path) or not operation.get("security") or _staff_only(path):
            continue
        url = _fill(path, user, object_factories)
        response = _call(Client(), method, url, _body(schema, operation), other_key)
        assert response.status_code == 404, f"{method.upper()} {path}: {response.status_code}"
        checked.append(f"{method.upper()} {path}")
    print(f"\n{len(checked)} object operations answer 404 to another user")
    assert len(checked) >= 10


@pytest.mark.parametrize("state", ["revoked", "expired"])
def test_a_revoked_or_expired_key_is_a_401_everywhere(schema, user, state, object_factories):
    api_key, raw = api_key_create(user=user, name="old")
    if state == "revoked":
        api_key_revoke(api_key=api_key, actor=user)
    else:
        ApiKey.objects.filter(pk=api_key.pk).update(expires_at=timezone.now() - timedelta(1))
    checked = 0
    for method, path, operation in _operations(schema):
        if not operation.get("security"):
            continue
        url = _fill(path, user, object_factories)
        response = _call(Client(), method, url, _body(schema, operation), raw)
        assert response.status_code == 401, f"{method.upper()} {path}: {response.status_code}"
        assert response.json()["error"]["code"] in ("authentication_failed", "not_authenticated")
        checked += 1
    assert checked >= 15


def _staff_only(path: str) -> bool:
    try:
        view = resolve(_PARAM.sub(lambda m: str(uuid.uuid4()), path)).func
    except Resolver404:  # integer ids (jobs)
        view = resolve(_PARAM.sub("1", path)).func
    permissions = getattr(getattr(view, "cls", None), "permission_classes", [])
    return any(issubclass(p, IsStaff) for p in permissions if isinstance(p, type))


def test_a_non_staff_key_on_a_staff_operation_is_a_403(
    schema, user, api_client, staff_client, object_factories
):
    staff_operations = [
        (method, path, operation)
        for method, path, operation in _operations(schema)
        if _staff_only(path)
    ]
    assert staff_operations, "expected at least one staff operation (security/events/)"
    for method, path, operation in staff_operations:
        url = _fill(path, user, object_factories)
        body = _body(schema, operation)
        refused = _call(Client(), method, url, body, api_client.raw_key)
        allowed = _call(Client(), method, url, body, staff_client.raw_key)
        assert refused.status_code == 403, f"{method.upper()} {path}"
        assert refused.json()["error"]["code"] == "permission_denied"
        # Past the permission gate: the object's state may still refuse (a restore of a
        # backup with no file is a 409), but never as a permission error.
        assert allowed.status_code not in (401, 403) and allowed.status_code < 500, (
            f"{method.upper()} {path}: {allowed.status_code}"
        )


_UNSAFE = {"post", "put", "patch", "delete"}


def _ninja_operations() -> set[tuple[str, str]]:
    """(method, path) of every Ninja operation, read from Ninja itself (not the merged
    document), so an operation the merge dropped would be noticed too."""
    from chatter_project.api import API_PREFIX, ninja_api

    document = ninja_api.get_openapi_schema(path_prefix=API_PREFIX.rstrip("/"))
    return {
        (method, path)
        for path, operations in document["paths"].items()
        for method in operations
        if method in _UNSAFE | {"get"}
    }


def test_the_matrix_covers_every_ninja_operation(schema):
    documented = {(method, path) for method, path, _ in _operations(schema)}
    ninja = _ninja_operations()

    assert ninja, "Ninja serves no operation?"
    assert ninja <= documented, sorted(ninja - documented)
    assert any(method in _UNSAFE for method, _ in ninja), "expected a Ninja write (the stream)"


def test_a_read_only_key_is_refused_on_every_write_drf_and_ninja(schema, user, object_factories):
    from conversations.models import Message

    before = set(Message.objects.filter(role="user").values_list("pk", flat=True))
    _, read_only = api_key_create(user=user, name="reader", scopes=["read"])
    writes = [
        (method, path, operation)
        for method, path, operation in _operations(schema)
        if method in _UNSAFE and operation.get("security")
    ]
    ninja_writes = {(m, p) for m, p in _ninja_operations() if m in _UNSAFE}
    assert ninja_writes <= {(m, p) for m, p, _ in writes}
    for method, path, operation in writes:
        url = _fill(path, user, object_factories)
        response = _call(Client(), method, url, _body(schema, operation), read_only)
        assert response.status_code == 403, f"{method.upper()} {path}: {response.status_code}"
        assert response.json()["error"]["code"] == "permission_denied", f"{method} {path}"
    # A refused send (or stream) stored nothing: the only user messages are the factories'.
    made = set(Message.objects.filter(role="user").values_list("pk", flat=True)) - before
    factories = Message.objects.filter(pk__in=made, conversation__tool_approvals__isnull=False)
    assert made == set(factories.values_list("pk", flat=True))
    assert len(writes) >= 10


def test_a_read_only_key_still_reads_drf_and_ninja(user, client_for):
    client = client_for(user, scopes=["read"])

    assert client.get("/api/v1/conversations/").status_code == 200
    assert client.get("/api/v1/whoami/").json()["scopes"] == ["read"]


def test_a_write_only_key_cannot_read_on_ninja_either(user, client_for):
    client = client_for(user, scopes=["write"])

    assert client.get("/api/v1/conversations/").status_code == 403
    response = client.get("/api/v1/whoami/")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
