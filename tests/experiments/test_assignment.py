"""Deterministic, sticky assignment: weights, traffic share, targeting, ramps, and no
assignment unless the experiment runs."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from scipy import stats

from experiments.assignment import TRAFFIC_SALT, VARIANT_SALT, included, unit_hash, variant_for
from experiments.models import Assignment, Experiment
from experiments.services import experiment_assign, experiment_pause, experiment_update

pytestmark = pytest.mark.django_db

WEIGHTED = {
    "allocation": "weighted",
    "variants": [
        {"name": "control", "is_control": True, "weight": 1},
        {"name": "friendly", "weight": 3, "configuration": {"system_prompt": "Be warm."}},
    ],
}


def test_the_hash_is_deterministic_and_uniform():
    values = [unit_hash("exp", f"user-{i}", VARIANT_SALT) for i in range(20_000)]

    assert values[:3] == [unit_hash("exp", f"user-{i}", VARIANT_SALT) for i in range(3)]
    assert all(0 <= v < 1 for v in values)
    assert stats.kstest(values, "uniform").pvalue > 0.001
    # Another key, another draw for the same unit.
    assert unit_hash("other", "user-0", VARIANT_SALT) != values[0]


def test_weights_split_the_units_as_declared(make_experiment, user):
    experiment = make_experiment(user, **WEIGHTED)
    variants = list(experiment.variants.all())

    counts = {"control": 0, "friendly": 0}
    for i in range(20_000):
        counts[variant_for(experiment, variants, f"user-{i}").name] += 1

    # 1:3 of 20,000; the chi-square of the split is far from the SRM threshold.
    assert counts["control"] == pytest.approx(5000, abs=4 * (20_000 * 0.25 * 0.75) ** 0.5)
    assert stats.chisquare([counts["control"], counts["friendly"]], [5000, 15000]).pvalue > 0.001


def test_an_equal_allocation_ignores_the_weights(make_experiment, user):
    experiment = make_experiment(user, **{**WEIGHTED, "allocation": "equal"})
    variants = list(experiment.variants.all())

    control = sum(
        variant_for(experiment, variants, f"u{i}").name == "control" for i in range(10_000)
    )

    assert control == pytest.approx(5000, abs=4 * 50)


def test_traffic_inclusion_and_the_variant_are_independent(make_experiment, user):
    experiment = make_experiment(user, traffic_percentage=30, **WEIGHTED)
    variants = list(experiment.variants.all())
    now = timezone.now()

    inside = [f"user-{i}" for i in range(20_000) if included(experiment, f"user-{i}", now)]
    control = sum(variant_for(experiment, variants, unit).name == "control" for unit in inside)

    assert len(inside) == pytest.approx(6000, abs=4 * (20_000 * 0.3 * 0.7) ** 0.5)
    # Among the included units the split is still 1:3: inclusion says nothing of the variant.
    assert control / len(inside) == pytest.approx(0.25, abs=0.025)
    traffic = [unit_hash(experiment.key, f"user-{i}", TRAFFIC_SALT) for i in range(5000)]
    variant = [unit_hash(experiment.key, f"user-{i}", VARIANT_SALT) for i in range(5000)]
    assert abs(stats.pearsonr(traffic, variant).statistic) < 0.05


def test_assignment_is_stored_and_sticky(make_experiment, user):
    experiment = make_experiment(user, start=True, **WEIGHTED)

    first = [experiment_assign(experiment=experiment, unit_id=f"u{i}") for i in range(200)]
    again = [experiment_assign(experiment=experiment, unit_id=f"u{i}") for i in range(200)]

    assert {o.reason for o in first} == {"assigned"}
    assert {o.reason for o in again} == {"existing"}
    assert [o.variant.name for o in first] == [o.variant.name for o in again]
    assert Assignment.objects.filter(experiment=experiment).count() == 200


def test_an_assignment_is_the_variant_the_hash_selects(make_experiment, user):
    experiment = make_experiment(user, start=True, **WEIGHTED)
    variants = list(experiment.variants.all())

    outcome = experiment_assign(experiment=experiment, unit_id="unit-42")

    assert outcome.variant == variant_for(experiment, variants, "unit-42")


def test_units_outside_the_traffic_share_are_left_out_and_not_stored(make_experiment, user):
    experiment = make_experiment(user, start=True, traffic_percentage=20)

    outcomes = [experiment_assign(experiment=experiment, unit_id=f"u{i}") for i in range(500)]

    reasons = [o.reason for o in outcomes]
    assert reasons.count("assigned") == pytest.approx(100, abs=4 * (500 * 0.2 * 0.8) ** 0.5)
    assert set(reasons) == {"assigned", "traffic"}
    assert all(o.variant is None for o in outcomes if o.reason == "traffic")
    assert Assignment.objects.count() == reasons.count("assigned")


def test_raising_the_traffic_never_moves_an_assigned_unit(make_experiment, user):
    experiment = make_experiment(user, start=True, traffic_percentage=10, **WEIGHTED)
    before = {
        f"u{i}": o.variant.name
        for i in range(600)
        if (o := experiment_assign(experiment=experiment, unit_id=f"u{i}")).variant
    }

    experiment = experiment_update(experiment=experiment, actor=user, traffic_percentage=60)
    after = {
        f"u{i}": o.variant.name
        for i in range(600)
        if (o := experiment_assign(experiment=experiment, unit_id=f"u{i}")).variant
    }

    assert before and all(after[unit] == variant for unit, variant in before.items())
    assert len(after) == pytest.approx(360, abs=4 * (600 * 0.6 * 0.4) ** 0.5)


def test_a_ramp_includes_more_units_as_its_steps_pass(make_experiment, user):
    experiment = make_experiment(
        user,
        start=True,
        allocation="ramp",
        ramp_schedule=[
            {"hours": 0, "traffic_percentage": 10},
            {"hours": 24, "traffic_percentage": 50},
            {"hours": 72, "traffic_percentage": 100},
        ],
    )
    early = {
        f"u{i}": o.variant.name
        for i in range(400)
        if (o := experiment_assign(experiment=experiment, unit_id=f"u{i}")).variant
    }
    # Two days later (moved back in time rather than waiting): the second step is in force.
    Experiment.objects.filter(pk=experiment.pk).update(
        started_at=timezone.now() - dt.timedelta(hours=48)
    )
    experiment.refresh_from_db()
    later = {
        f"u{i}": o.variant.name
        for i in range(400)
        if (o := experiment_assign(experiment=experiment, unit_id=f"u{i}")).variant
    }

    assert len(early) == pytest.approx(40, abs=4 * (400 * 0.1 * 0.9) ** 0.5)
    assert len(later) == pytest.approx(200, abs=4 * (400 * 0.5 * 0.5) ** 0.5)
    assert all(later[unit] == variant for unit, variant in early.items())


@pytest.mark.parametrize(
    ("rule", "attributes", "included_"),
    [
        ({"attribute": "plan", "operator": "eq", "value": "pro"}, {"plan": "pro"}, True),
        ({"attribute": "plan", "operator": "eq", "value": "pro"}, {"plan": "free"}, False),
        ({"attribute": "plan", "operator": "ne", "value": "pro"}, {}, True),
        ({"attribute": "plan", "operator": "in", "value": ["pro", "team"]}, {"plan": "team"}, True),
        ({"attribute": "plan", "operator": "not_in", "value": ["pro"]}, {"plan": "pro"}, False),
        ({"attribute": "age", "operator": "gte", "value": 18}, {"age": 18}, True),
        ({"attribute": "age", "operator": "lt", "value": 18}, {"age": 30}, False),
        ({"attribute": "age", "operator": "gt", "value": 18}, {"age": "30"}, False),
        (
            {"attribute": "email", "operator": "contains", "value": "@acme."},
            {"email": "a@acme.io"},
            True,
        ),
        ({"attribute": "tags", "operator": "contains", "value": "beta"}, {"tags": ["beta"]}, True),
        ({"attribute": "country", "operator": "exists", "value": True}, {}, False),
        ({"attribute": "country", "operator": "exists", "value": False}, {}, True),
    ],
)
def test_targeting_rules_decide_who_is_in(make_experiment, user, rule, attributes, included_):
    experiment = make_experiment(user, start=True, allocation="targeted", targeting=[rule])

    outcome = experiment_assign(experiment=experiment, unit_id="u1", attributes=attributes)

    assert (outcome.variant is not None) == included_
    assert outcome.reason == ("assigned" if included_ else "targeting")


def test_every_rule_must_hold(make_experiment, user):
    experiment = make_experiment(
        user,
        start=True,
        targeting=[
            {"attribute": "plan", "operator": "eq", "value": "pro"},
            {"attribute": "country", "operator": "in", "value": ["FR", "DE"]},
        ],
    )

    both = experiment_assign(
        experiment=experiment, unit_id="a", attributes={"plan": "pro", "country": "FR"}
    )
    one = experiment_assign(
        experiment=experiment, unit_id="b", attributes={"plan": "pro", "country": "US"}
    )

    assert both.variant is not None and one.variant is None


def test_no_assignment_unless_the_experiment_runs(make_experiment, user, api_client):
    draft = make_experiment(user)
    paused = make_experiment(user, start=True, key="paused-one")
    experiment_pause(experiment=paused, actor=user)

    for experiment in (draft, paused):
        response = api_client.post(
            f"/api/v1/experiments/{experiment.pk}/assign/", {"user_id": "u1"}, format="json"
        )
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "experiment_not_running"
    assert not Assignment.objects.exists()


def test_the_assign_endpoint_answers_the_variant_and_its_configuration(
    make_experiment, user, api_client
):
    experiment = make_experiment(user, start=True, **WEIGHTED)
    expected = variant_for(experiment, list(experiment.variants.all()), "client-7")

    first = api_client.post(
        f"/api/v1/experiments/{experiment.pk}/assign/",
        {"user_id": "client-7", "attributes": {"plan": "pro"}},
        format="json",
    )
    again = api_client.post(
        f"/api/v1/experiments/{experiment.pk}/assign/", {"user_id": "client-7"}, format="json"
    )

    assert first.status_code == 200
    assert first.json() == {
        "user_id": "client-7",
        "variant": {
            "name": expected.name,
            "is_control": expected.is_control,
            "configuration": expected.configuration,
        },
        "reason": "assigned",
    }
    assert again.json() == {**first.json(), "reason": "existing"}
    assert Assignment.objects.get().attributes == {"plan": "pro"}


def test_no_unit_is_assigned_outside_the_start_and_end(make_experiment, user):
    now = timezone.now()
    later = make_experiment(user, start=True, key="later", start_at=now + dt.timedelta(days=1))
    over = make_experiment(
        user,
        start=True,
        key="over",
        start_at=now - dt.timedelta(days=2),
        end_at=now - dt.timedelta(days=1),
    )

    assert experiment_assign(experiment=later, unit_id="u").reason == "not_started"
    assert experiment_assign(experiment=over, unit_id="u").reason == "ended"
