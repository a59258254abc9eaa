from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


@pytest.fixture
def v1_deprecated(settings):
    settings.CHATTER_API_VERSIONS = {
        "1": {
            "status": "deprecated",
            "deprecated_at": "2026-01-01T00:00:00+00:00",
            "sunset_at": "2027-06-30T00:00:00+00:00",
            "successor": "2",
        },
        "2": {"status": "active"},
    }


def test_every_api_response_names_its_version(api_client):
    assert api_client.get("/api/v1/conversations/")["API-Version"] == "1"
    assert api_client.get("/api/v2/conversations/")["API-Version"] == "2"
    assert api_client.get("/api/v1/no-such/")["API-Version"] == "1"


def test_headers_choose_the_version_of_an_unversioned_path(api_client):
    assert api_client.get("/api/conversations/")["API-Version"] == "1"
    response = api_client.get("/api/conversations/", HTTP_X_API_VERSION="2")
    assert response.status_code == 200 and response["API-Version"] == "2"
    response = api_client.get("/api/conversations/", HTTP_ACCEPT="application/json; version=2")
    assert response.status_code == 200 and response["API-Version"] == "2"
    assert "count" not in response.json()  # v2's cursor list


def test_paths_outside_the_versions_are_not_rerouted(client):
    response = client.get("/api/schema/", HTTP_X_API_VERSION="2")

    assert response.status_code == 200
    assert response["API-Version"] == "2"


def test_the_url_wins_and_a_conflicting_header_is_a_400(api_client):
    assert api_client.get("/api/v2/conversations/", HTTP_X_API_VERSION="2").status_code == 200
    response = api_client.get("/api/v1/conversations/", HTTP_X_API_VERSION="2")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "version_conflict"


def test_unknown_versions(api_client):
    assert api_client.get("/api/v9/conversations/").status_code == 404
    response = api_client.get("/api/conversations/", HTTP_X_API_VERSION="9")
    assert response.status_code == 406


def test_a_deprecated_version_says_so_and_links_its_successor(v1_deprecated, api_client):
    response = api_client.get("/api/v1/conversations/")

    assert response.status_code == 200
    assert response["Deprecation"] == "@1767225600"
    assert response["Sunset"] == "Wed, 30 Jun 2027 00:00:00 GMT"
    assert response["Link"] == '</api/v2/>; rel="successor-version"'
    assert "Deprecation" not in api_client.get("/api/v2/conversations/")


def test_a_sunset_version_is_gone(settings, api_client):
    settings.CHATTER_API_VERSIONS = {
        "1": {"status": "sunset", "sunset_at": "2026-06-30", "successor": "2"},
        "2": {"status": "active"},
    }
    response = api_client.get("/api/v1/conversations/")

    assert response.status_code == 410
    assert response.json()["error"]["code"] == "version_sunset"
    assert response["Link"] == '</api/v2/>; rel="successor-version"'


def test_v2_errors_are_problem_details(api_client):
    response = api_client.post("/api/v2/conversations/", {"title": "x" * 301}, format="json")

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:chatter:problem:validation_error"
    assert problem["status"] == 400 and problem["title"] == "Bad Request"
    assert problem["instance"] == "/api/v2/conversations/"
    assert "title" in problem["errors"]
    missing = api_client.get("/api/v2/conversations/00000000-0000-0000-0000-000000000000/")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


def test_v1_lists_have_pages_and_v2_lists_have_cursors(api_client):
    for index in range(3):
        api_client.post("/api/v1/conversations/", {"title": f"c{index}"}, format="json")

    v1 = api_client.get("/api/v1/conversations/?page_size=2").json()
    first = api_client.get("/api/v2/conversations/?page_size=2").json()
    second = api_client.get(first["next"]).json()

    assert v1["count"] == 3
    assert set(first) == {"next", "previous", "results"}
    assert first["next"].startswith("http://testserver/api/v2/conversations/?cursor=")
    titles = [c["title"] for c in first["results"] + second["results"]]
    assert sorted(titles) == ["c0", "c1", "c2"]
    assert second["next"] is None


def test_both_versions_are_documented(client, v1_deprecated):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    paths = schema["paths"]

    v1_list = paths["/api/v1/conversations/"]["get"]
    v2_list = paths["/api/v2/conversations/"]["get"]
    assert v1_list["deprecated"] is True and "deprecated" not in v2_list
    v2_ref = v2_list["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert "count" not in schema["components"]["schemas"][v2_ref.split("/")[-1]]["properties"]
    assert "cursor" in {p["name"] for p in v2_list["parameters"]}
    assert "application/problem+json" in v2_list["responses"]["default"]["content"]
    assert "/api/v2/conversations/{conversation_id}/messages/stream/" in paths


def test_the_version_table_is_checked_at_start_up(settings):
    from web.versioning import check_versions

    assert check_versions() == []
    settings.CHATTER_API_VERSIONS = {
        "1": {"status": "deprecated", "successor": "3"},
        "2": {"status": "retired", "sunset_at": "not a date"},
    }
    messages = [error.msg for error in check_versions()]
    assert len(messages) == 4, messages
