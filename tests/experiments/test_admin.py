"""The experiments admin: the list with status and actions, the edit form with its inlines
through the services, and the results page with its server-rendered plots."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from agents.models import Agent
from experiments.models import Experiment, MetricEvent
from experiments.services import experiment_assign
from tests.experiments.conftest import assign_many

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(make_user):
    return make_user("root", staff=True, password="pw-for-tests")


@pytest.fixture
def admin_client(root) -> Client:
    client = Client()
    assert client.login(username="root", password="pw-for-tests")
    return client


def _inline(prefix: str, rows: list[dict[str, str]], initial: int = 0) -> dict[str, str]:
    data = {
        f"{prefix}-TOTAL_FORMS": str(len(rows)),
        f"{prefix}-INITIAL_FORMS": str(initial),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }
    for index, row in enumerate(rows):
        data.update({f"{prefix}-{index}-{k}": v for k, v in row.items()})
    return data


def _form(variants=None, metrics=None, **overrides: str) -> dict[str, str]:
    data = {
        "name": "Warmth",
        "key": "warmth",
        "type": "prompt",
        "description": "",
        "agent": "",
        "allocation": "equal",
        "traffic_percentage": "100",
        "ramp_schedule": "[]",
        "targeting": "[]",
        "confidence_level": "0.95",
        "start_at": "",
        "end_at": "",
        **_inline(
            "variants",
            variants
            if variants is not None
            else [
                {"name": "control", "is_control": "on", "weight": "1", "configuration": "{}"},
                {"name": "warm", "weight": "1", "configuration": '{"system_prompt": "Be warm."}'},
            ],
        ),
        **_inline(
            "metrics",
            metrics
            if metrics is not None
            else [
                {
                    "name": "satisfaction",
                    "type": "user_satisfaction",
                    "aggregation": "",
                    "direction": "",
                    "primary": "on",
                    "minimum_detectable_effect": "0.05",
                    "guardrail_threshold": "0",
                }
            ],
        ),
    }
    data.update(overrides)
    return data


def test_an_operator_adds_an_experiment_with_its_variants_and_metrics(admin_client, root):
    response = admin_client.post("/admin/experiments/experiment/add/", _form())

    assert response.status_code == 302, _errors(response)
    experiment = Experiment.objects.get()
    assert (experiment.owner, experiment.status, experiment.key) == (root, "draft", "warmth")
    assert [(v.name, v.is_control, v.configuration) for v in experiment.variants.all()] == [
        ("control", True, {}),
        ("warm", False, {"system_prompt": "Be warm."}),
    ]
    metric = experiment.metrics.get()
    assert (metric.name, metric.aggregation, metric.direction, metric.primary) == (
        "satisfaction",
        "mean",
        "increase",
        True,
    )


def _errors(response) -> str:
    if response.status_code != 200 or not response.context:
        return ""
    form = response.context["adminform"].form
    inlines = [
        formset.formset.non_form_errors() for formset in response.context["inline_admin_formsets"]
    ]
    return f"{form.errors} {inlines}"


def test_the_admin_refuses_what_the_api_refuses(admin_client):
    wrong_key = admin_client.post(
        "/admin/experiments/experiment/add/",
        _form(
            variants=[
                {"name": "control", "is_control": "on", "weight": "1", "configuration": "{}"},
                {"name": "gpt", "weight": "1", "configuration": '{"model": "local"}'},
            ]
        ),
    )
    two_controls = admin_client.post(
        "/admin/experiments/experiment/add/",
        _form(
            variants=[
                {"name": "a", "is_control": "on", "weight": "1", "configuration": "{}"},
                {"name": "b", "is_control": "on", "weight": "1", "configuration": "{}"},
            ]
        ),
    )

    assert wrong_key.status_code == 200
    assert "set only system_prompt" in _errors(wrong_key)
    assert two_controls.status_code == 200
    assert "Only one variant is the control." in _errors(two_controls)
    assert not Experiment.objects.exists()


def test_the_list_shows_status_units_and_a_results_link(admin_client, root, make_experiment):
    experiment = make_experiment(root, start=True)
    assign_many(experiment, 12)

    response = admin_client.get("/admin/experiments/experiment/")

    html = response.content.decode()
    assert response.status_code == 200
    assert ">running<" in html
    assert '<td class="field-units">12</td>' in html
    assert f"/admin/experiments/experiment/{experiment.pk}/results/" in html


def test_the_lifecycle_actions_call_the_services(admin_client, root, make_experiment):
    ready = make_experiment(root)
    unready = make_experiment(root, key="unready", metrics=[])

    response = admin_client.post(
        "/admin/experiments/experiment/",
        {"action": "start_experiments", "_selected_action": [str(ready.pk), str(unready.pk)]},
        follow=True,
    )

    text = response.content.decode()
    assert "Started 1 experiment(s)." in text
    assert "Terse or friendly (unready): The experiment cannot start yet." in text
    assert Experiment.objects.get(pk=ready.pk).status == "running"
    assert Experiment.objects.get(pk=unready.pk).status == "draft"

    admin_client.post(
        "/admin/experiments/experiment/",
        {"action": "pause_experiments", "_selected_action": [str(ready.pk)]},
    )
    assert Experiment.objects.get(pk=ready.pk).status == "paused"


def test_a_running_experiments_variants_are_read_only_in_the_admin(
    admin_client, root, make_experiment
):
    experiment = make_experiment(root, start=True)

    page = admin_client.get(
        f"/admin/experiments/experiment/{experiment.pk}/change/"
    ).content.decode()

    assert 'name="variants-0-name"' not in page  # the inline shows, but takes no input
    assert "Be warm and friendly." in page
    assert 'name="traffic_percentage"' in page  # traffic may still ramp
    assert 'name="key"' not in page


def test_the_results_page_draws_the_lift_and_the_metric_over_time(
    admin_client, root, make_experiment
):
    experiment = make_experiment(root, start=True)
    assignments = assign_many(experiment, 40)
    MetricEvent.objects.bulk_create(
        [
            MetricEvent(
                experiment=experiment,
                variant=a.variant,
                assignment=a,
                metric="satisfaction",
                value=(0.9 if a.variant.is_control else 0.6) + 0.01 * (i % 7),
                source="client",
            )
            for i, a in enumerate(assignments)
        ]
    )

    response = admin_client.get(f"/admin/experiments/experiment/{experiment.pk}/results/")

    html = response.content.decode()
    assert response.status_code == 200
    assert html.count('<svg class="experiment-lift-plot"') == 1
    assert html.count('<svg class="experiment-metric-plot"') == 1
    assert "satisfaction · friendly" in html  # a lift row per metric and variant
    assert re.search(r"<polyline points=\"[\d., ]+\"", html)  # the daily means
    assert "No sample-ratio mismatch" in html
    assert "cdn" not in html.lower() and '<script src="http' not in html
    assert 'name="winner"' in html


def test_complete_with_winner_from_the_results_page_promotes_to_the_agent(
    admin_client, root, make_experiment
):
    agent = Agent.objects.create(owner=None, name="Shared", slug="shared", system_prompt="Old.")
    experiment = make_experiment(root, start=True, agent_id=agent.pk)
    experiment_assign(experiment=experiment, unit_id="u1")

    response = admin_client.post(
        f"/admin/experiments/experiment/{experiment.pk}/operate/complete/",
        {"winner": "friendly", "promote": "agent"},
        follow=True,
    )

    assert "Terse or friendly (terse-or-friendly) is completed." in response.content.decode()
    experiment.refresh_from_db()
    assert (experiment.status, experiment.winner.name, experiment.promoted_to) == (
        "completed",
        "friendly",
        "agent",
    )
    agent.refresh_from_db()
    assert agent.system_prompt == "Be warm and friendly."


def test_an_invalid_operation_is_reported_not_raised(admin_client, root, make_experiment):
    experiment = make_experiment(root)

    response = admin_client.post(
        f"/admin/experiments/experiment/{experiment.pk}/operate/pause/", follow=True
    )

    assert response.status_code == 200
    assert "A draft experiment cannot pause" in response.content.decode()
    assert Experiment.objects.get().status == "draft"


def test_a_running_experiments_traffic_changes_through_the_admin(
    admin_client, root, make_experiment
):
    experiment = make_experiment(root, start=True)
    page = admin_client.get(f"/admin/experiments/experiment/{experiment.pk}/change/")
    data = {
        "name": "Renamed while running",
        "description": "",
        "traffic_percentage": "40",
        "ramp_schedule": "[]",
        "confidence_level": "0.95",
        "end_at": "",
        **_inline("variants", [], initial=0),
        **_inline("metrics", [], initial=0),
    }
    # The inlines are read-only: their management forms are what the page sent.
    for prefix in ("variants", "metrics"):
        formset = next(
            f.formset for f in page.context["inline_admin_formsets"] if f.formset.prefix == prefix
        )
        data[f"{prefix}-TOTAL_FORMS"] = str(formset.total_form_count())
        data[f"{prefix}-INITIAL_FORMS"] = str(formset.initial_form_count())
        for index, form in enumerate(formset.forms):
            data[f"{prefix}-{index}-id"] = str(form.instance.pk)
            data[f"{prefix}-{index}-experiment"] = str(experiment.pk)

    response = admin_client.post(f"/admin/experiments/experiment/{experiment.pk}/change/", data)

    assert response.status_code == 302, _errors(response)
    experiment.refresh_from_db()
    assert (experiment.name, experiment.traffic_percentage, experiment.status) == (
        "Renamed while running",
        40.0,
        "running",
    )
    assert [v.name for v in experiment.variants.all()] == ["control", "friendly"]
