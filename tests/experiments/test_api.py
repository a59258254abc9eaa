"""The experiments API: create/read/update/delete, the lifecycle rules, ownership, and bad
input as 400s in the error envelope."""

from __future__ import annotations

import uuid

import pytest
from jsonschema import Draft202012Validator

from accounts.models import AuditLog
from agents.models import Agent
from core.events import event_type_get
from core.models import Event
from experiments.models import Experiment
from tests.experiments.conftest import prompt_experiment

pytestmark = pytest.mark.django_db

URL = "/api/v1/experiments/"
EVENT_KEYS = {"status", "resumed", "reason", "winner", "promoted_to"}


def create(client, **overrides):
    return client.post(URL, prompt_experiment(**overrides), format="json")


def act(client, experiment_id, action, body=None):
    return client.post(f"{URL}{experiment_id}/{action}/", body or {}, format="json")


def test_it_creates_a_draft_and_answers_the_whole_experiment(api_client, user):
    response = create(api_client)

    assert response.status_code == 201
    body = response.json()
    experiment = Experiment.objects.get()
    variants = list(experiment.variants.all())
    assert body == {
        "id": str(experiment.pk),
        "name": "Terse or friendly",
        "key": "terse-or-friendly",
        "description": "",
        "type": "prompt",
        "status": "draft",
        "allocation": "equal",
        "traffic_percentage": 100.0,
        "effective_traffic_percentage": 100.0,
        "ramp_schedule": [],
        "targeting": [],
        "agent": None,
        "confidence_level": 0.95,
        "start_at": None,
        "end_at": None,
        "variants": [
            {
                "id": variants[0].pk,
                "name": "control",
                "is_control": True,
                "weight": 1.0,
                "configuration": {},
            },
            {
                "id": variants[1].pk,
                "name": "friendly",
                "is_control": False,
                "weight": 1.0,
                "configuration": {"system_prompt": "Be warm and friendly."},
            },
        ],
        "metrics": [
            {
                "name": "satisfaction",
                "type": "user_satisfaction",
                "aggregation": "mean",
                "direction": "increase",
                "primary": True,
                "guardrail": False,
                "minimum_detectable_effect": 0.05,
                "guardrail_threshold": 0.0,
                "role": "primary",
            },
            {
                "name": "latency",
                "type": "response_time",
                "aggregation": "mean",
                "direction": "decrease",
                "primary": False,
                "guardrail": False,
                "minimum_detectable_effect": 0.05,
                "guardrail_threshold": 0.0,
                "role": "secondary",
            },
        ],
        "winner": None,
        "promoted_to": "",
        "owner": "alice",
        "started_at": None,
        "paused_at": None,
        "completed_at": None,
        "created_at": body["created_at"],
        "updated_at": body["updated_at"],
    }
    assert AuditLog.objects.filter(action="experiment.create", actor=user).count() == 1


def test_the_lifecycle_runs_draft_running_paused_running_completed(api_client):
    experiment_id = create(api_client).json()["id"]

    started = act(api_client, experiment_id, "start")
    paused = act(api_client, experiment_id, "pause")
    resumed = act(api_client, experiment_id, "start")
    completed = act(api_client, experiment_id, "complete", {"winner": "friendly"})

    assert [r.status_code for r in (started, paused, resumed, completed)] == [200] * 4
    assert started.json()["status"] == "running" and started.json()["started_at"]
    assert paused.json()["status"] == "paused" and paused.json()["paused_at"]
    assert resumed.json()["started_at"] == started.json()["started_at"]  # the first start
    assert resumed.json()["paused_at"] is None
    body = completed.json()
    assert (body["status"], body["winner"], body["promoted_to"]) == ("completed", "friendly", "")
    assert body["completed_at"]
    events = [
        (e.type, e.owner_id, {k: e.data[k] for k in e.data if k in EVENT_KEYS})
        for e in Event.objects.filter(type__startswith="experiment.").order_by("created_at")
    ]
    owner = Experiment.objects.get().owner_id
    assert events == [
        ("experiment.started", owner, {"status": "running", "resumed": False}),
        ("experiment.paused", owner, {"status": "paused", "reason": ""}),
        ("experiment.started", owner, {"status": "running", "resumed": True}),
        (
            "experiment.completed",
            owner,
            {"status": "completed", "winner": "friendly", "promoted_to": ""},
        ),
    ]
    for event in Event.objects.filter(type__startswith="experiment."):
        Draft202012Validator(event_type_get(event.type).schema).validate(event.data)
        assert event.data["id"] == experiment_id


@pytest.mark.parametrize(
    ("steps", "action", "status"),
    [
        ([], "pause", "draft"),
        ([], "complete", "draft"),
        (["start"], "start", "running"),
        (["start", "pause"], "pause", "paused"),
        (["start", "cancel"], "start", "cancelled"),
        (["start", "cancel"], "cancel", "cancelled"),
    ],
)
def test_an_invalid_transition_is_a_409_naming_the_status(api_client, steps, action, status):
    experiment_id = create(api_client).json()["id"]
    for step in steps:
        assert act(api_client, experiment_id, step).status_code == 200

    response = act(api_client, experiment_id, action, {"winner": "control"})

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "invalid_transition"
    assert response.json()["error"]["details"] == {"status": status, "action": action}


def test_a_completed_experiment_is_final(api_client):
    experiment_id = create(api_client).json()["id"]
    act(api_client, experiment_id, "start")
    act(api_client, experiment_id, "complete", {"winner": "control"})

    for action in ("start", "pause", "cancel", "complete"):
        response = act(api_client, experiment_id, action, {"winner": "control"})
        assert response.status_code == 409, action


def test_a_draft_without_its_parts_cannot_start(api_client):
    experiment_id = create(
        api_client,
        variants=[{"name": "a", "configuration": {}}, {"name": "b", "configuration": {}}],
        metrics=[{"name": "latency", "type": "response_time"}],
    ).json()["id"]

    response = act(api_client, experiment_id, "start")

    assert response.status_code == 409
    assert response.json()["error"] == {
        "code": "not_ready",
        "message": "The experiment cannot start yet.",
        "details": {
            "variants": ["Exactly one variant is the control."],
            "metrics": ["Exactly one primary metric."],
        },
    }


def test_completing_names_a_winner_among_the_variants(api_client):
    experiment_id = create(api_client).json()["id"]
    act(api_client, experiment_id, "start")

    response = act(api_client, experiment_id, "complete", {"winner": "nobody"})

    assert response.status_code == 400
    assert response.json()["error"]["details"] == {"winner": ["No variant is called 'nobody'."]}
    assert Experiment.objects.get().status == "running"


def test_a_draft_changes_freely_and_given_variants_replace_the_list(api_client):
    experiment_id = create(api_client).json()["id"]

    response = api_client.patch(
        f"{URL}{experiment_id}/",
        {
            "name": "Renamed",
            "allocation": "weighted",
            "variants": [
                {"name": "control", "is_control": True, "weight": 3},
                {"name": "short", "weight": 1, "configuration": {"system_prompt": "Be brief."}},
            ],
        },
        format="json",
    )

    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "Renamed" and body["allocation"] == "weighted"
    assert [(v["name"], v["weight"]) for v in body["variants"]] == [
        ("control", 3.0),
        ("short", 1.0),
    ]


def test_a_running_experiments_variants_and_metrics_are_frozen(api_client):
    experiment_id = create(api_client).json()["id"]
    act(api_client, experiment_id, "start")

    variants = api_client.patch(
        f"{URL}{experiment_id}/",
        {"variants": [{"name": "control", "is_control": True}, {"name": "other"}]},
        format="json",
    )
    rules = api_client.patch(f"{URL}{experiment_id}/", {"allocation": "weighted"}, format="json")
    allowed = api_client.patch(
        f"{URL}{experiment_id}/", {"name": "Still running", "traffic_percentage": 50}, format="json"
    )

    assert variants.status_code == 409
    assert variants.json()["error"]["code"] == "experiment_frozen"
    assert variants.json()["error"]["details"] == {
        "variants": ["Frozen once the experiment has started."]
    }
    assert rules.status_code == 409
    assert allowed.status_code == 200
    assert (allowed.json()["name"], allowed.json()["traffic_percentage"]) == ("Still running", 50.0)
    assert [v.name for v in Experiment.objects.get().variants.all()] == ["control", "friendly"]


def test_a_running_experiment_is_not_deleted(api_client):
    experiment_id = create(api_client).json()["id"]
    act(api_client, experiment_id, "start")

    refused = api_client.delete(f"{URL}{experiment_id}/")
    act(api_client, experiment_id, "cancel")
    deleted = api_client.delete(f"{URL}{experiment_id}/")

    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "experiment_active"
    assert deleted.status_code == 204
    assert not Experiment.objects.exists()


def test_others_experiments_are_404_and_staff_see_all(api_client, other_client, staff_client):
    experiment_id = create(api_client).json()["id"]

    for method, path in [
        ("get", ""),
        ("patch", ""),
        ("delete", ""),
        ("post", "start/"),
        ("post", "assign/"),
        ("post", "events/"),
        ("get", "results/"),
    ]:
        response = getattr(other_client, method)(f"{URL}{experiment_id}/{path}", {}, format="json")
        assert response.status_code == 404, (method, path)
        assert response.json()["error"]["code"] == "not_found"
    assert other_client.get(URL).json()["count"] == 0
    assert staff_client.get(URL).json()["count"] == 1
    assert staff_client.get(f"{URL}{experiment_id}/").status_code == 200


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"key": "Not A Slug"}, "key"),
        ({"type": "vibes"}, "type"),
        ({"traffic_percentage": 101}, "traffic_percentage"),
        ({"confidence_level": 1.5}, "confidence_level"),
        ({"temprature": 0.3}, "temprature"),
        ({"variants": [{"name": "a", "weight": -1}]}, "variants"),
        (
            {"variants": [{"name": "a", "configuration": {"model": "local"}}]},
            "variants[0].configuration",
        ),
        (
            {"variants": [{"name": "a", "is_control": True}, {"name": "b", "is_control": True}]},
            "variants",
        ),
        ({"variants": [{"name": "a"}, {"name": "a"}]}, "variants[1].name"),
        (
            {"metrics": [{"name": "m", "type": "cost", "primary": True, "guardrail": True}]},
            "metrics[0]",
        ),
        (
            {"metrics": [{"name": "m", "type": "conversion", "aggregation": "mean"}]},
            "metrics[0].aggregation",
        ),
        (
            {"targeting": [{"attribute": "plan", "operator": "in", "value": "pro"}]},
            "targeting[0].value",
        ),
        ({"targeting": [{"attribute": "plan", "operator": "like", "value": 1}]}, "targeting"),
        (
            {
                "allocation": "ramp",
                "ramp_schedule": [
                    {"hours": 0, "traffic_percentage": 50},
                    {"hours": 24, "traffic_percentage": 10},
                ],
            },
            "ramp_schedule[1].traffic_percentage",
        ),
    ],
)
def test_bad_input_is_a_400_in_the_envelope_naming_the_field(api_client, overrides, field):
    response = create(api_client, **overrides)

    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert field in error["details"], error
    assert not Experiment.objects.exists()


def test_a_key_is_unique_among_ones_own_experiments(api_client, other_client):
    assert create(api_client).status_code == 201
    assert create(other_client).status_code == 201  # another user's may reuse it

    again = create(api_client)

    assert again.status_code == 400
    assert again.json()["error"]["details"] == {
        "key": ["Already used by another of your experiments."]
    }


def test_an_agent_one_may_not_use_is_404(api_client, other_user):
    private = Agent.objects.create(owner=other_user, name="Theirs", slug="theirs")

    for agent_id in (str(private.pk), str(uuid.uuid4())):
        response = create(api_client, agent=agent_id)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "unknown_agent"


def test_a_variant_model_must_be_a_provider_this_deployment_has(api_client, settings):
    settings.OPENAI_API_KEY = ""
    settings.OPENAI_BASE_URL = ""

    response = create(
        api_client,
        type="model",
        variants=[
            {"name": "control", "is_control": True},
            {"name": "gpt", "configuration": {"model": "openai:gpt-4o-mini"}},
        ],
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "model_unavailable"
    assert "variants[1].configuration" in response.json()["error"]["details"]


def test_a_running_experiment_takes_its_own_get_body_back(api_client):
    experiment_id = create(api_client).json()["id"]
    act(api_client, experiment_id, "start")
    body = api_client.get(f"{URL}{experiment_id}/").json()

    response = api_client.patch(
        f"{URL}{experiment_id}/",
        {
            "name": "Same parts",
            "variants": body["variants"],  # ids and roles included: read-only, ignored
            "metrics": body["metrics"],
            "type": body["type"],
            "key": body["key"],
        },
        format="json",
    )

    assert response.status_code == 200, response.json()
    assert response.json()["name"] == "Same parts"
    assert [v["id"] for v in response.json()["variants"]] == [v["id"] for v in body["variants"]]
