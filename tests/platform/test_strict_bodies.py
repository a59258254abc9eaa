"""A request body holds only the fields its operation declares: a misspelt field is a 400 that
names it, never a silent drop; the OpenAPI document says so for every body."""

from __future__ import annotations

import pytest

from conversations.models import Conversation

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("url", "body", "unknown"),
    [
        ("/api/v1/conversations/", {"title": "t", "temprature": 0.5}, "temprature"),
        ("/api/v1/jobs/", {"handler": "echo", "argz": {}}, "argz"),
        ("/api/v1/api-keys/", {"name": "k", "scope": ["read"]}, "scope"),
        ("/api/v1/knowledge/search/", {"query": "x", "limit": 3}, "limit"),
        ("/api/v1/knowledge/metadata-query/", {"query": "x"}, "query"),
    ],
)
def test_an_unknown_field_is_named_in_a_400(api_client, url, body, unknown):
    response = api_client.post(url, body, format="json")

    assert response.status_code == 400, response.content
    assert response.json()["error"]["details"][unknown] == ["Unknown field."]


def test_nothing_is_created_when_a_field_is_misspelt(api_client, user):
    api_client.post("/api/v1/conversations/", {"title": "t", "temprature": 0.5}, format="json")

    assert not Conversation.objects.filter(owner=user).exists()


def test_a_message_with_an_unknown_field_is_refused_by_both_send_endpoints(api_client):
    conversation = api_client.post("/api/v1/conversations/", {}, format="json").json()["id"]
    for path in ("messages/", "messages/stream/"):
        response = api_client.post(
            f"/api/v1/conversations/{conversation}/{path}",
            {"content": "hello", "contnet": "hello"},
            format="json",
        )

        assert response.status_code == 400, response.content
        assert "contnet" in response.json()["error"]["details"]


def test_a_body_read_from_the_api_can_be_sent_back(api_client):
    created = api_client.post("/api/v1/conversations/", {"title": "t"}, format="json").json()

    response = api_client.put(
        f"/api/v1/conversations/{created['id']}/", {**created, "title": "renamed"}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["title"] == "renamed"


def test_text_fields_keep_their_json_type(api_client):
    response = api_client.post("/api/v1/jobs/", {"handler": "echo", "dedupe_key": 0}, format="json")

    assert response.status_code == 400
    assert "dedupe_key" in response.json()["error"]["details"]


def test_the_schema_closes_every_request_body(api_client):
    schema = api_client.get("/api/schema/?format=json").json()
    components = schema["components"]["schemas"]
    open_bodies = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for media in operation.get("requestBody", {}).get("content", {}).values():
                body = media["schema"]
                if "$ref" in body:
                    body = components[body["$ref"].rsplit("/", 1)[1]]
                if "properties" in body and body.get("additionalProperties") is not False:
                    open_bodies.append(f"{method.upper()} {path}")

    assert open_bodies == []


def _model_pattern(api_client) -> str:
    schema = api_client.get("/api/schema/?format=json").json()
    model = schema["components"]["schemas"]["ConversationRequest"]["properties"]["model"]
    return model["oneOf"][0]["pattern"] if "oneOf" in model else model["pattern"]


def test_the_schema_names_the_model_providers_a_conversation_accepts(api_client, settings):
    settings.OPENAI_API_KEY = settings.OPENAI_BASE_URL = settings.ANTHROPIC_API_KEY = ""

    assert "local" in _model_pattern(api_client)
    assert "openai" not in _model_pattern(api_client)
    unknown = api_client.post("/api/v1/conversations/", {"model": "nosuch:x"}, format="json")
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "unknown_model"


def test_a_provider_is_refused_until_it_is_configured(api_client, settings):
    settings.OPENAI_API_KEY = settings.OPENAI_BASE_URL = ""
    refused = api_client.post("/api/v1/conversations/", {"model": "openai:gpt-4o"}, format="json")

    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "model_unavailable"

    settings.OPENAI_BASE_URL = "http://127.0.0.1:9/v1"  # an OpenAI-compatible server (Ollama)
    accepted = api_client.post("/api/v1/conversations/", {"model": "openai:gpt-4o"}, format="json")

    assert accepted.status_code == 201, accepted.content
    assert "openai" in _model_pattern(api_client)
