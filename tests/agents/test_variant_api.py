"""agents/{id}/variants/ (the agent's editors change them), variant-choices/ and
interactions/ (read-only)."""

from __future__ import annotations

import pytest

from agents.models import Agent, AgentVariant
from agents.services import interaction_record, variant_choose, variant_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def agent(user) -> Agent:
    return Agent.objects.create(owner=user, created_by=user, name="Helper", slug="helper")


@pytest.fixture
def shared(staff_user) -> Agent:
    return Agent.objects.create(owner=None, created_by=staff_user, name="Desk", slug="desk")


def _url(agent, variant=None) -> str:
    base = f"/api/v1/agents/{agent.pk}/variants/"
    return f"{base}{variant.pk}/" if variant else base


def test_the_owner_creates_lists_changes_and_deletes_variants(api_client, agent):
    created = api_client.post(
        _url(agent),
        {"name": "terse", "system_prompt": "Be terse.", "parameters": {"temperature": 0.2}},
        format="json",
    )

    assert created.status_code == 201, created.json()
    body = created.json()
    assert body == {
        "id": body["id"],
        "name": "terse",
        "system_prompt": "Be terse.",
        "parameters": {"temperature": 0.2},
        "active": True,
        "alpha": 1.0,
        "beta": 1.0,
        "posterior_mean": 0.5,
        "feedback_count": 0,
        "reward_sum": 0.0,
        "created_at": body["created_at"],
    }
    listed = api_client.get(_url(agent)).json()
    assert [v["name"] for v in listed["results"]] == ["terse"]
    variant = AgentVariant.objects.get()
    patched = api_client.patch(
        _url(agent, variant), {"active": False, "parameters": {"max_tokens": 64}}, format="json"
    )
    assert patched.status_code == 200, patched.json()
    assert (patched.json()["active"], patched.json()["parameters"]) == (False, {"max_tokens": 64})
    assert patched.json()["system_prompt"] == "Be terse."  # what was not sent stays
    assert api_client.get(_url(agent, variant)).json()["active"] is False
    assert api_client.delete(_url(agent, variant)).status_code == 204
    assert not AgentVariant.objects.exists()


def test_a_chosen_variant_keeps_its_history_and_is_deactivated_instead(api_client, agent):
    variant = variant_create(agent=agent, name="a")
    variant_choose(agent=agent)

    response = api_client.delete(_url(agent, variant))

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "variant_has_history"
    assert AgentVariant.objects.filter(pk=variant.pk).exists()


def test_a_user_cannot_change_a_shared_agents_variants_but_staff_can(
    api_client, staff_client, shared
):
    variant = variant_create(agent=shared, name="house")

    assert api_client.get(_url(shared)).status_code == 200  # seeing them is fine
    attempts = [
        api_client.post(_url(shared), {"name": "mine"}, format="json"),
        api_client.patch(_url(shared, variant), {"active": False}, format="json"),
        api_client.delete(_url(shared, variant)),
        api_client.get(f"/api/v1/agents/{shared.pk}/variant-choices/"),
    ]
    assert [r.status_code for r in attempts] == [403, 403, 403, 403]
    assert all(r.json()["error"]["code"] == "permission_denied" for r in attempts)
    assert list(AgentVariant.objects.values_list("name", "active")) == [("house", True)]

    assert staff_client.post(_url(shared), {"name": "staff"}, format="json").status_code == 201
    assert (
        staff_client.patch(_url(shared, variant), {"active": False}, format="json").status_code
        == 200
    )


def test_another_users_private_agent_and_its_variants_are_a_404(other_client, agent):
    variant = variant_create(agent=agent, name="a")

    for method, path in [
        ("get", _url(agent)),
        ("post", _url(agent)),
        ("get", _url(agent, variant)),
        ("patch", _url(agent, variant)),
        ("delete", _url(agent, variant)),
        ("get", f"/api/v1/agents/{agent.pk}/variant-choices/"),
        ("get", f"/api/v1/agents/{agent.pk}/interactions/"),
    ]:
        response = getattr(other_client, method)(path, {"name": "x"}, format="json")
        assert response.status_code == 404, (method, path)
    assert AgentVariant.objects.get().active


def test_a_variant_of_another_agent_is_a_404_under_this_one(api_client, agent, user):
    other = Agent.objects.create(owner=user, created_by=user, name="Other", slug="other")
    variant = variant_create(agent=other, name="a")

    assert api_client.get(_url(agent, variant)).status_code == 404
    assert (
        api_client.patch(_url(agent, variant), {"active": False}, format="json").status_code == 404
    )


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"name": "x", "colour": "red"}, {"colour"}),
        ({"name": "x", "parameters": {"colour": "red"}}, {"parameters"}),
        ({"name": "x", "parameters": {"temperature": 9}}, {"parameters"}),
        ({"name": "x", "parameters": {"model": "nosuch:model"}}, {"parameters"}),
        ({"name": "x", "active": "yes"}, {"active"}),
        ({"system_prompt": "no name"}, {"name"}),
        ({"name": ""}, {"name"}),
    ],
)
def test_variant_bodies_are_closed_and_checked(api_client, agent, body, fields):
    response = api_client.post(_url(agent), body, format="json")

    assert response.status_code == 400, response.json()
    assert set(response.json()["error"]["details"]) == fields
    assert not AgentVariant.objects.exists()


def test_a_variants_name_is_fixed_and_names_are_unique(api_client, agent):
    variant = variant_create(agent=agent, name="a")

    renamed = api_client.patch(_url(agent, variant), {"name": "b"}, format="json")
    again = api_client.post(_url(agent), {"name": "a"}, format="json")

    assert renamed.status_code == 400
    assert renamed.json()["error"]["details"] == {"name": ["A variant's name cannot be changed."]}
    assert again.status_code == 409


def test_the_owner_reads_the_choices_with_their_rewards(api_client, agent, user):
    variant_create(agent=agent, name="a")
    choice = variant_choose(agent=agent, user=user)

    body = api_client.get(f"/api/v1/agents/{agent.pk}/variant-choices/").json()

    assert body["count"] == 1
    assert body["results"][0] == {
        "id": choice.pk,
        "variant": "a",
        "variant_id": str(choice.variant_id),
        "sample": choice.sample,
        "samples": {"a": choice.sample},
        "reward": None,
        "rewarded_at": None,
        "created_at": body["results"][0]["created_at"],
    }


def test_interactions_are_listed_with_their_tool_call_traces(api_client, agent, user):
    call = {
        "id": "call_1",
        "name": "calculator",
        "args": {"expression": "6*7"},
        "result": "42" * 2000,
        "latency_ms": 3,
        "error": None,
    }
    interaction_record(
        agent=agent, source="openai", user=user, model_used="local", tool_calls=[call]
    )

    body = api_client.get(f"/api/v1/agents/{agent.pk}/interactions/").json()

    assert body["count"] == 1
    row = body["results"][0]
    assert (row["source"], row["user"], row["tool_call_count"]) == ("openai", "alice", 1)
    assert row["tool_calls"] == [{**call, "result": "42" * 1000}]  # an excerpt of 2,000
    assert row["confidence"] is None and row["confidence_method"] == ""


def test_a_user_of_a_shared_agent_sees_only_their_own_interactions(
    api_client, other_client, staff_client, shared, user, other_user
):
    interaction_record(agent=shared, source="conversation", user=user, model_used="local")
    interaction_record(agent=shared, source="conversation", user=other_user, model_used="local")

    mine = api_client.get(f"/api/v1/agents/{shared.pk}/interactions/").json()
    every = staff_client.get(f"/api/v1/agents/{shared.pk}/interactions/").json()

    assert [r["user"] for r in mine["results"]] == ["alice"]
    assert sorted(r["user"] for r in every["results"]) == ["alice", "bob"]
