from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def assert_envelope(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]


def test_an_unauthenticated_request_gets_a_401_envelope(anon_client):
    response = anon_client.get("/api/v1/api-keys/")

    assert_envelope(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_an_unauthenticated_ninja_request_gets_the_same_envelope(anon_client):
    response = anon_client.get("/api/v1/whoami/")

    assert_envelope(response, 401, "not_authenticated")


def test_an_unknown_api_path_gets_a_404_envelope(api_client):
    assert_envelope(api_client.get("/api/v1/no-such-thing/"), 404, "not_found")
    assert_envelope(api_client.get("/api/v9/"), 404, "not_found")


def test_a_wrong_method_gets_a_405_envelope_on_drf(api_client):
    response = api_client.delete("/api/v1/api-keys/")

    assert_envelope(response, 405, "method_not_allowed")


def test_a_wrong_method_gets_a_405_envelope_on_ninja(api_client):
    response = api_client.post("/api/v1/health/")

    assert_envelope(response, 405, "method_not_allowed")
    assert "GET" in response["Allow"]


def test_malformed_json_gets_a_400_envelope(api_client):
    response = api_client.post(
        "/api/v1/api-keys/", data="{not json", content_type="application/json"
    )

    assert_envelope(response, 400, "malformed_request")


def test_a_missing_required_field_names_the_field(api_client):
    response = api_client.post("/api/v1/api-keys/", {}, format="json")

    error = assert_envelope(response, 400, "validation_error")
    assert "name" in error["details"]


def test_an_unhandled_error_is_a_500_envelope_without_internals(api_client, monkeypatch):
    def explode(**kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr("accounts.api.api_key_list", explode)

    response = api_client.get("/api/v1/api-keys/")

    error = assert_envelope(response, 500, "internal_error")
    assert "secret" not in response.content.decode()
    assert error["details"] == {}


def test_pages_outside_the_api_keep_html_errors(client):
    response = client.get("/no-such-page/")

    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")
