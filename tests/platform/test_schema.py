from __future__ import annotations

import re

import pytest
from openapi_spec_validator import validate

pytestmark = pytest.mark.django_db


@pytest.fixture
def schema(client) -> dict:
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def test_the_schema_is_valid_openapi_3_1(schema):
    assert schema["openapi"].startswith("3.1")
    validate(schema)


def test_the_schema_includes_drf_and_ninja_operations(schema):
    paths = schema["paths"]

    assert "get" in paths["/api/v1/api-keys/"] and "post" in paths["/api/v1/api-keys/"]
    assert "post" in paths["/api/v1/api-keys/{id}/revoke/"]
    assert "get" in paths["/api/v1/whoami/"]
    assert "get" in paths["/api/v1/health/"] and "get" in paths["/api/v1/ready/"]


def test_public_probes_need_no_key_and_the_rest_use_the_bearer_scheme(schema):
    assert schema["paths"]["/api/v1/health/"]["get"]["security"] == []
    assert schema["paths"]["/api/v1/whoami/"]["get"]["security"] == [{"ApiKeyAuth": []}]
    assert schema["components"]["securitySchemes"]["ApiKeyAuth"]["scheme"] == "bearer"


def test_ninja_refs_resolve_inside_the_merged_document(schema):
    ref = schema["paths"]["/api/v1/whoami/"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]["schema"]["$ref"]
    assert ref.split("/")[-1] in schema["components"]["schemas"]


def test_swagger_ui_is_served_without_a_cdn(client):
    response = client.get("/api/docs/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html
    assert "cdn" not in html.lower() and "unpkg" not in html.lower()


def test_schema_generation_is_free_of_warnings(tmp_path):
    from django.core.management import call_command

    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))

    assert "/api/v1/whoami/" in out.read_text()


def test_every_free_text_input_declares_that_nul_is_refused(schema):
    cursor = next(
        p
        for p in schema["paths"]["/api/v2/api-keys/"]["get"]["parameters"]
        if p["name"] == "cursor"
    )
    search = next(
        p
        for p in schema["paths"]["/api/v1/conversations/"]["get"]["parameters"]
        if p["name"] == "q"
    )
    title = schema["components"]["schemas"]["ConversationRequest"]["properties"]["title"]

    for declared in (cursor["schema"], search["schema"], title):
        assert declared["pattern"] == "^[^\\x00]*$"


def test_message_content_declares_its_rule_on_both_send_endpoints(schema):
    json_send = schema["components"]["schemas"]["MessageInRequest"]["properties"]["content"]
    branch = schema["components"]["schemas"]["BranchRequest"]["properties"]["content"]

    for declared in (json_send, branch):
        assert re.fullmatch(declared["pattern"], "hi") and re.search(declared["pattern"], "a")
        for refused in ("", "   ", "\x1c", "\ufeff", "a\x00b"):
            assert not re.fullmatch(declared["pattern"], refused), refused


def test_page_numbers_are_declared_from_1(schema):
    page = next(
        p
        for p in schema["paths"]["/api/v1/conversations/"]["get"]["parameters"]
        if p["name"] == "page"
    )
    assert page["schema"]["minimum"] == 1
