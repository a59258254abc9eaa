"""POST /api/v1/agents/route/: capability similarity (the knowledge embedder) x performance."""

from __future__ import annotations

import pytest

from agents.models import Agent
from agents.services import variant_create, variant_feedback_record

pytestmark = pytest.mark.django_db

COOKING = [
    {"name": "recipes", "description": "Cooking recipes, baking bread and cakes, kitchen tips."}
]
DATABASES = [
    {"name": "sql", "description": "PostgreSQL queries, indexes and database performance."}
]


@pytest.fixture
def agents(api_client, staff_client, create_agent, embedder_loaded) -> dict[str, str]:
    ids = {}
    for client, slug, capabilities, extra in [
        (api_client, "chef", COOKING, {}),
        (staff_client, "dba", DATABASES, {"shared": True, "type": "task_oriented"}),
    ]:
        response = create_agent(
            client, slug=slug, name=slug.title(), capabilities=capabilities, **extra
        )
        assert response.status_code == 201, response.json()
        ids[slug] = response.json()["id"]
    return ids


def route(client, **payload):
    return client.post("/api/v1/agents/route/", payload, format="json")


def test_it_routes_to_the_agent_whose_capabilities_match(api_client, agents):
    response = route(api_client, message="How long should I bake a loaf of bread?")

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["agent"] == {
        "id": agents["chef"],
        "slug": "chef",
        "name": "Chef",
        "type": "conversational",
    }
    assert [c["agent"]["slug"] for c in body["candidates"]] == ["chef", "dba"]
    first, second = body["candidates"]
    assert first["score"] > second["score"]
    assert first["performance"] == 0.5 and first["feedback_count"] == 0
    assert first["score"] == pytest.approx(first["similarity"], abs=1e-5)  # neutral prior: x1

    other = route(api_client, message="Why is my SQL query slow without an index?").json()
    assert other["agent"]["slug"] == "dba"


def test_preferred_type_narrows_the_candidates(api_client, agents):
    body = route(api_client, message="bake bread", preferred_type="task_oriented").json()

    assert [c["agent"]["slug"] for c in body["candidates"]] == ["dba"]
    assert body["agent"]["slug"] == "dba"


def test_measured_performance_weights_the_score(api_client, user, create_agent, embedder_loaded):
    for slug in ("good", "bad"):
        create_agent(api_client, slug=slug, name=slug, capabilities=COOKING)
    for slug, reward in (("good", 1.0), ("bad", 0.0)):
        variant = variant_create(agent=Agent.objects.get(slug=slug), name="default")
        for _ in range(8):
            variant_feedback_record(variant=variant, reward=reward)

    candidates = route(api_client, message="a cake recipe").json()["candidates"]

    assert [c["agent"]["slug"] for c in candidates] == ["good", "bad"]
    good, bad = candidates
    assert good["similarity"] == pytest.approx(bad["similarity"], abs=1e-5)
    assert good["performance"] == pytest.approx(9 / 10)  # Beta(1 + 8, 1 + 0)
    assert bad["performance"] == pytest.approx(1 / 10)
    assert good["feedback_count"] == 8
    assert good["score"] == pytest.approx(good["similarity"] * 1.4, abs=1e-5)


def test_others_private_and_inactive_agents_are_not_candidates(
    api_client, other_client, agents, create_agent
):
    create_agent(other_client, slug="bobs-chef", capabilities=COOKING)
    inactive = create_agent(api_client, slug="sleepy", capabilities=COOKING, status="inactive")
    assert inactive.status_code == 201

    slugs = [c["agent"]["slug"] for c in route(api_client, message="bread").json()["candidates"]]
    bobs = [c["agent"]["slug"] for c in route(other_client, message="bread").json()["candidates"]]

    assert slugs == ["chef", "dba"]
    assert bobs == ["bobs-chef", "dba"]


def test_no_usable_agent_answers_no_agent(other_client, embedder_loaded):
    assert route(other_client, message="hello").json() == {"agent": None, "candidates": []}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "message"),
        ({"message": ""}, "message"),
        ({"message": "   "}, "message"),
        ({"message": 5}, "message"),
        ({"message": "hi", "preferred_type": "telepathic"}, "preferred_type"),
        ({"message": "hi", "agent": "x"}, "agent"),
    ],
)
def test_it_refuses_bad_route_requests(api_client, payload, field):
    response = route(api_client, **payload)

    assert response.status_code == 400
    assert field in response.json()["error"]["details"]


def test_routing_is_rate_limited_as_expensive(settings, api_client, agents):
    settings.CHATTER_RATE_LIMITS = {"default": "100/h", "expensive": "2/h"}

    statuses = [route(api_client, message="bread").status_code for _ in range(3)]

    assert statuses == [200, 200, 429]
    assert api_client.get("/api/v1/agents/").status_code == 200  # listing is not expensive
