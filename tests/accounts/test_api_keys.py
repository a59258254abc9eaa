from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import ApiKey, AuditLog
from accounts.services import api_key_create

pytestmark = pytest.mark.django_db


def test_a_created_key_is_shown_once_and_stored_only_as_a_hash(api_client):
    response = api_client.post("/api/v1/api-keys/", {"name": "ci"}, format="json")

    assert response.status_code == 201
    raw = response.json()["key"]
    assert raw.startswith("chk_") and response.json()["prefix"] == raw[:12]
    stored = ApiKey.objects.get(pk=response.json()["id"])
    assert stored.hashed_key == hashlib.sha256(raw.encode()).hexdigest()
    assert raw not in str(list(ApiKey.objects.values()))
    detail = api_client.get(f"/api/v1/api-keys/{stored.pk}/")
    assert detail.status_code == 200 and "key" not in detail.json()


def test_the_new_key_authenticates(api_client, anon_client):
    raw = api_client.post("/api/v1/api-keys/", {"name": "second"}, format="json").json()["key"]
    anon_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")

    assert anon_client.get("/api/v1/whoami/").json()["key_prefix"] == raw[:12]


def test_it_rejects_a_revoked_key(api_client, user):
    api_key = ApiKey.objects.get(user=user)

    revoked = api_client.post(f"/api/v1/api-keys/{api_key.pk}/revoke/")
    after = api_client.get("/api/v1/api-keys/")

    assert revoked.status_code == 200 and revoked.json()["is_active"] is False
    assert after.status_code == 401
    assert after.json()["error"]["code"] == "authentication_failed"
    assert AuditLog.objects.filter(action="api_key.revoked", target_id=str(api_key.pk)).count() == 1


def test_it_rejects_an_expired_key(user, client_for):
    client = client_for(user)
    ApiKey.objects.filter(user=user).update(expires_at=timezone.now() - timedelta(seconds=1))

    response = client.get("/api/v1/api-keys/")

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_it_rejects_an_unknown_key_on_drf_and_ninja(anon_client):
    anon_client.credentials(HTTP_AUTHORIZATION="Bearer chk_not-a-real-key")

    assert anon_client.get("/api/v1/api-keys/").status_code == 401
    assert anon_client.get("/api/v1/whoami/").status_code == 401


def test_an_expiry_in_the_past_makes_a_key_that_is_already_expired(api_client, anon_client):
    # The schema can only say "a date-time"; what it declares is accepted, and the answer
    # says plainly that the key is not active.
    past = (timezone.now() - timedelta(days=1)).isoformat()

    response = api_client.post(
        "/api/v1/api-keys/", {"name": "x", "expires_at": past}, format="json"
    )

    assert response.status_code == 201
    assert response.json()["is_active"] is False
    anon_client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['key']}")
    assert anon_client.get("/api/v1/whoami/").status_code == 401


def test_without_scopes_a_key_gets_the_documented_default(api_client, client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    documented = schema["components"]["schemas"]["ApiKeyRequest"]["properties"]["scopes"]

    response = api_client.post("/api/v1/api-keys/", {"name": "defaults"}, format="json")

    assert response.status_code == 201
    assert response.json()["scopes"] == sorted(documented["default"]) == ["read", "write"]


def test_keys_are_not_created_from_forms(api_client, client):
    # A form cannot tell an empty scopes list from a missing one: scopes are never guessed.
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    response = api_client.post("/api/v1/api-keys/", {"name": "from a form"}, format="multipart")

    assert response.status_code == 415, response.content
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert list(schema["paths"]["/api/v1/api-keys/"]["post"]["requestBody"]["content"]) == [
        "application/json"
    ]


def test_unknown_scopes_are_refused_naming_the_field(api_client):
    response = api_client.post(
        "/api/v1/api-keys/", {"name": "x", "scopes": ["root"]}, format="json"
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert "scopes" in response.json()["error"]["details"]


def test_a_read_only_key_cannot_write(user, client_for):
    client = client_for(user, scopes=["read"])

    assert client.get("/api/v1/api-keys/").status_code == 200
    response = client.post("/api/v1/api-keys/", {"name": "escalate"}, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


def test_another_users_key_is_invisible(api_client, other_user):
    foreign, _ = api_key_create(user=other_user, name="bob's")

    assert api_client.get(f"/api/v1/api-keys/{foreign.pk}/").status_code == 404
    revoke = api_client.post(f"/api/v1/api-keys/{foreign.pk}/revoke/")
    assert revoke.status_code == 404
    assert revoke.json()["error"]["code"] == "not_found"
    foreign.refresh_from_db()
    assert foreign.revoked_at is None
    listed = {row["id"] for row in api_client.get("/api/v1/api-keys/").json()["results"]}
    assert str(foreign.pk) not in listed


def test_staff_see_every_key(staff_client, user, other_user):
    api_key_create(user=user, name="a")
    api_key_create(user=other_user, name="b")

    owners = {row["owner"] for row in staff_client.get("/api/v1/api-keys/").json()["results"]}

    assert {"alice", "bob", "operator"} <= owners


def test_creation_and_use_are_recorded(api_client, user):
    api_client.post("/api/v1/api-keys/", {"name": "audited"}, format="json")

    entry = AuditLog.objects.filter(action="api_key.created", actor=user).latest("created_at")
    assert entry.details["owner"] == "alice"
    assert entry.request_id  # tied to the request that made it
    assert ApiKey.objects.filter(user=user, last_used_at__isnull=False).exists()


def test_last_used_is_written_at_most_once_per_interval(api_client, user):
    api_client.get("/api/v1/whoami/")
    first = ApiKey.objects.get(user=user).last_used_at

    api_client.get("/api/v1/whoami/")

    assert ApiKey.objects.get(user=user).last_used_at == first


def test_the_request_path_lookup_loads_what_the_orm_loads(user):
    """api_key_authenticate reads the key and its user with one precomposed statement: the
    instances must equal the ORM's (every concrete field, the JSON of scopes included),
    and every refusal the ORM's filter makes (revoked, expired, inactive user) holds."""
    from accounts.services import api_key_authenticate

    api_key, raw = api_key_create(user=user, name="compare", scopes=["read"])
    orm = ApiKey.objects.select_related("user").get(pk=api_key.pk)

    loaded = api_key_authenticate(raw)

    for field in ApiKey._meta.concrete_fields:
        if field.name != "last_used_at":  # the lookup records the use
            assert getattr(loaded, field.attname) == getattr(orm, field.attname), field.name
    for field in type(user)._meta.concrete_fields:
        assert getattr(loaded.user, field.attname) == getattr(orm.user, field.attname), field.name
    assert loaded.scopes == ["read"] and loaded.last_used_at is not None
    assert not loaded._state.adding and loaded.user.api_keys.filter(pk=api_key.pk).exists()

    ApiKey.objects.filter(pk=api_key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert api_key_authenticate(raw) is None
    ApiKey.objects.filter(pk=api_key.pk).update(expires_at=None, revoked_at=timezone.now())
    assert api_key_authenticate(raw) is None
    ApiKey.objects.filter(pk=api_key.pk).update(revoked_at=None)
    assert api_key_authenticate(raw) is not None
    type(user).objects.filter(pk=user.pk).update(is_active=False)
    assert api_key_authenticate(raw) is None
