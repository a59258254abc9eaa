from __future__ import annotations

import pytest

from accounts.models import AuditLog
from agents.models import Agent, AgentPromptVersion

pytestmark = pytest.mark.django_db


def test_it_creates_an_agent_with_its_first_prompt_version(api_client, user, create_agent):
    response = create_agent(api_client)

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body == {
        "id": body["id"],
        "name": "Helper",
        "slug": "helper",
        "type": "conversational",
        "description": "Answers questions.",
        "system_prompt": "You are helpful.",
        "model": "local",
        "temperature": 0.3,
        "max_tokens": 512,
        "fallback_model": "",
        "capabilities": [{"name": "general", "description": "General questions."}],
        "tools": ["calculator"],
        "knowledge_filter": {},
        "status": "active",
        "shared": False,
        "owner": "alice",
        "created_at": body["created_at"],
        "updated_at": body["updated_at"],
    }
    history = api_client.get(f"/api/v1/agents/{body['id']}/prompt-history/").json()
    assert history["count"] == 1
    assert history["results"][0]["version"] == 1
    assert history["results"][0]["system_prompt"] == "You are helpful."
    assert history["results"][0]["author"] == "alice"
    assert AuditLog.objects.filter(action="agent.create", actor=user).exists()


def test_every_prompt_change_is_kept_with_who_and_when(api_client, staff_user, create_agent):
    agent_id = create_agent(api_client).json()["id"]

    api_client.patch(f"/api/v1/agents/{agent_id}/", {"system_prompt": "Be brief."}, format="json")
    api_client.patch(f"/api/v1/agents/{agent_id}/", {"temperature": 0.9}, format="json")
    api_client.patch(f"/api/v1/agents/{agent_id}/", {"system_prompt": "Be kind."}, format="json")

    history = api_client.get(f"/api/v1/agents/{agent_id}/prompt-history/").json()["results"]
    assert [(v["version"], v["system_prompt"]) for v in history] == [
        (3, "Be kind."),
        (2, "Be brief."),
        (1, "You are helpful."),
    ]
    assert all(v["author"] == "alice" and v["created_at"] for v in history)


def test_another_users_agent_is_a_404(api_client, other_client, create_agent):
    agent_id = create_agent(api_client).json()["id"]

    for method, path in [
        ("get", f"/api/v1/agents/{agent_id}/"),
        ("patch", f"/api/v1/agents/{agent_id}/"),
        ("put", f"/api/v1/agents/{agent_id}/"),
        ("delete", f"/api/v1/agents/{agent_id}/"),
        ("get", f"/api/v1/agents/{agent_id}/prompt-history/"),
    ]:
        response = getattr(other_client, method)(path, {"name": "mine now"}, format="json")
        assert response.status_code == 404, (method, path)
        assert response.json()["error"]["code"] == "not_found"
    assert other_client.get("/api/v1/agents/").json()["count"] == 0
    assert Agent.objects.get(pk=agent_id).name == "Helper"


def test_staff_create_shared_agents_that_everyone_uses_but_only_staff_change(
    staff_client, api_client, other_client, create_agent
):
    response = create_agent(staff_client, slug="support", shared=True)
    assert response.status_code == 201, response.json()
    shared = response.json()
    assert shared["shared"] is True
    assert shared["owner"] is None

    for client in (api_client, other_client):
        assert client.get(f"/api/v1/agents/{shared['id']}/").status_code == 200
        assert [a["slug"] for a in client.get("/api/v1/agents/").json()["results"]] == ["support"]
    refused = api_client.patch(f"/api/v1/agents/{shared['id']}/", {"name": "x"}, format="json")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"
    assert api_client.delete(f"/api/v1/agents/{shared['id']}/").status_code == 403
    assert (
        staff_client.patch(
            f"/api/v1/agents/{shared['id']}/", {"name": "Support"}, format="json"
        ).json()["name"]
        == "Support"
    )


def test_a_user_cannot_create_a_shared_agent(api_client, create_agent):
    response = create_agent(api_client, shared=True)

    assert response.status_code == 403
    assert response.json()["error"]["details"] == {"shared": ["Staff only."]}
    assert not Agent.objects.exists()


def test_slugs_are_unique_per_owner(api_client, other_client, staff_client, create_agent):
    assert create_agent(api_client).status_code == 201
    assert create_agent(other_client).status_code == 201  # another owner: fine
    assert create_agent(staff_client, shared=True).status_code == 201  # shared: its own space

    again = create_agent(api_client, name="Second")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "slug_taken"
    assert create_agent(staff_client, shared=True).status_code == 409


def test_staff_see_every_agent(api_client, staff_client, create_agent):
    agent_id = create_agent(api_client).json()["id"]

    assert staff_client.get(f"/api/v1/agents/{agent_id}/").status_code == 200


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"tools": ["no_such_tool"]}, "tools"),
        ({"tools": ["calculator", "calculator"]}, "tools"),
        ({"type": "telepathic"}, "type"),
        ({"model": "Open AI"}, "model"),
        ({"model": "nosuchprovider:model"}, "model"),
        ({"model": "openai"}, "model"),  # openai needs a model name
        ({"fallback_model": "x y"}, "fallback_model"),
        ({"temperature": "0.5"}, "temperature"),
        ({"temperature": 3}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"capabilities": [{"name": "x"}]}, "capabilities"),
        ({"capabilities": [{"name": "x", "description": "a", "extra": 1}]}, "capabilities"),
        ({"capabilities": [{"name": "x", "description": "a"}] * 2}, "capabilities"),
        ({"knowledge_filter": {"year": {"$near": 3}}}, "knowledge_filter"),
        ({"knowledge_filter": {"year": {"$in": []}}}, "knowledge_filter"),
        ({"slug": "Not A Slug"}, "slug"),
        ({"status": "paused"}, "status"),
        ({"shared": "yes"}, "shared"),
        ({"temprature": 0.5}, "temprature"),
    ],
)
def test_it_refuses_invalid_agents_naming_the_field(api_client, create_agent, overrides, field):
    response = create_agent(api_client, **overrides)

    assert response.status_code == 400, response.json()
    assert field in response.json()["error"]["details"], response.json()
    assert not Agent.objects.exists()


def test_a_knowledge_filter_in_the_search_grammar_is_kept(api_client, create_agent):
    scope = {"topic": "cooking", "year": {"$gte": 2020}, "author.name": {"$in": ["Ann", "Bo"]}}

    response = create_agent(api_client, knowledge_filter=scope)

    assert response.status_code == 201, response.json()
    assert response.json()["knowledge_filter"] == scope


def test_a_form_encoded_body_is_refused(api_client):
    response = api_client.post("/api/v1/agents/", {"name": "x", "slug": "x"})

    assert response.status_code == 415


def test_a_read_only_key_cannot_write(user, client_for, create_agent, api_client):
    reader = client_for(user, scopes=["read"])
    agent_id = create_agent(api_client).json()["id"]

    assert create_agent(reader, slug="other").status_code == 403
    assert (
        reader.patch(f"/api/v1/agents/{agent_id}/", {"name": "x"}, format="json").status_code == 403
    )
    assert reader.delete(f"/api/v1/agents/{agent_id}/").status_code == 403
    route = reader.post("/api/v1/agents/route/", {"message": "hi"}, format="json")
    assert route.status_code == 403
    assert reader.get(f"/api/v1/agents/{agent_id}/").status_code == 200
    assert Agent.objects.count() == 1


def test_deleting_an_agent_removes_its_history(api_client, create_agent):
    agent_id = create_agent(api_client).json()["id"]

    assert api_client.delete(f"/api/v1/agents/{agent_id}/").status_code == 204
    assert not AgentPromptVersion.objects.exists()


def test_the_tool_registry_and_agent_types_are_listed(api_client):
    tools = api_client.get("/api/v1/agents/tools/").json()
    types = api_client.get("/api/v1/agents/types/").json()

    assert [tool["name"] for tool in tools] == [
        "calculator",
        "current_time",
        "http_get",
        "knowledge_search",
    ]
    assert all(tool["source"] == "builtin" and tool["description"] for tool in tools)
    assert [t["name"] for t in types] == ["conversational", "task_oriented"]


def test_one_400_names_every_bad_field_the_serializers_and_the_services(api_client, create_agent):
    response = create_agent(
        api_client,
        slug="Not A Slug",
        temperature=9,
        temprature=0.5,
        tools=["no_such_tool"],
        model="nosuchprovider:model",
        knowledge_filter={"year": {"$near": 3}},
        capabilities=[{"name": "x", "description": "a"}] * 2,
    )

    assert response.status_code == 400, response.json()
    assert set(response.json()["error"]["details"]) == {
        "slug",
        "temperature",
        "temprature",
        "tools",
        "model",
        "knowledge_filter",
        "capabilities",
    }
    assert not Agent.objects.exists()


def test_an_update_with_several_bad_fields_names_them_all(api_client, create_agent):
    agent_id = create_agent(api_client).json()["id"]

    response = api_client.patch(
        f"/api/v1/agents/{agent_id}/",
        {"max_tokens": 0, "tools": ["nope"], "fallback_model": "nosuch:x"},
        format="json",
    )

    assert response.status_code == 400
    assert set(response.json()["error"]["details"]) == {"max_tokens", "tools", "fallback_model"}
    assert Agent.objects.get(pk=agent_id).tools == ["calculator"]
