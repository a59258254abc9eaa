"""An enabled plugin's routes are in the OpenAPI document, and a route's declared body
schema is enforced."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate

pytestmark = pytest.mark.django_db

GREET = "/api/v1/plugins/sink/greet"


def test_an_enabled_plugins_routes_are_documented_in_every_version_and_go_when_disabled(
    api_client, staff_client, install, wheels
):
    plugin = install(wheels["sink"], enable=True)

    schema = api_client.get("/api/schema/?format=json").json()

    validate(schema)
    greet = schema["paths"][GREET]["post"]
    assert greet["summary"] == "Greet someone by name."  # the function's docstring
    assert greet["tags"] == ["plugins"] and "sink` 1.0.0" in greet["description"]
    body = greet["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["name"] and greet["requestBody"]["required"] is True
    answer = greet["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["properties"] == {"greeting": {"type": "string"}}
    assert set(schema["paths"]["/api/v1/plugins/sink/echo"]) == {"get", "post"}
    assert "Staff only" in schema["paths"]["/api/v1/plugins/sink/admin-only"]["get"]["description"]
    assert "post" in schema["paths"]["/api/v2/plugins/sink/greet"]  # every served version
    security_schemes = set(schema["components"]["securitySchemes"])
    assert {name for entry in greet["security"] for name in entry} <= security_schemes

    staff_client.post(f"/api/v1/plugins/{plugin['id']}/disable/", {}, format="json")
    after = api_client.get("/api/schema/?format=json").json()
    assert not [path for path in after["paths"] if path.startswith("/api/v1/plugins/sink/")]


@pytest.mark.parametrize(
    ("body", "where"),
    [({}, "body"), ({"name": ""}, "name"), ({"name": "Ada", "extra": 1}, "body"), ([], "body")],
)
def test_a_body_off_the_routes_schema_is_a_400_before_the_plugin_runs(
    api_client, install, wheels, body, where
):
    install(wheels["sink"], enable=True)

    response = api_client.post(GREET, body, format="json")

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "validation_error" and where in error["details"]


def test_a_body_that_fits_reaches_the_plugin(api_client, install, wheels):
    install(wheels["sink"], enable=True)

    response = api_client.post(GREET, {"name": "Ada"}, format="json")

    assert response.status_code == 200 and response.json() == {"greeting": "Hello, Ada!"}


def test_a_route_with_an_invalid_schema_does_not_load(staff_client, install, wheels, tmp_path):
    from tests.plugins.conftest import build_variant

    broken = build_variant(
        tmp_path,
        "sink",
        version="1.0.1",
        code=lambda text: text.replace('"minLength": 1', '"minLength": -1'),
    )
    plugin = install(broken)

    enabled = staff_client.post(f"/api/v1/plugins/{plugin['id']}/enable/", {}, format="json")

    assert enabled.status_code == 409
    assert enabled.json()["error"]["code"] == "plugin_load_failed"
    assert "not a valid JSON Schema" in enabled.json()["error"]["message"]
