"""The results endpoint: the whole payload, each number recomputed here with scipy from the
per-unit values; the events endpoint that feeds it."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
from scipy import stats

from experiments.models import Assignment, MetricEvent
from experiments.services import experiment_assign

pytestmark = pytest.mark.django_db

METRICS = [
    {"name": "latency", "type": "response_time", "primary": True, "minimum_detectable_effect": 0.1},
    {"name": "signup", "type": "conversion"},
]


def approx(value):
    return pytest.approx(value, rel=1e-7, abs=1e-12)


def _sequential(se, n, alpha=0.05, tuning=5000.0):
    rho2 = (-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / tuning
    return math.sqrt(
        se**2 * n * 2 * (n * rho2 + 1) / (n**2 * rho2) * math.log(math.sqrt(n * rho2 + 1) / alpha)
    )


def _expected_row(control, treatment, *, binomial, higher, mde):
    """One treatment row from the raw per-unit values, with scipy and closed forms."""
    c, t = np.asarray(control, dtype=float), np.asarray(treatment, dtype=float)
    mc, mt = c.mean(), t.mean()
    if binomial:
        vc, vt = mc * (1 - mc), mt * (1 - mt)
        _, p, _, _ = stats.chi2_contingency(
            [[c.sum(), len(c) - c.sum()], [t.sum(), len(t) - t.sum()]], correction=False
        )
        quantile = stats.norm.ppf(0.975)
    else:
        vc, vt = c.var(ddof=1), t.var(ddof=1)
        welch = stats.ttest_ind(t, c, equal_var=False)
        p, quantile = welch.pvalue, stats.t.ppf(0.975, welch.df)
    se = math.sqrt(vt / len(t) / mc**2 + mt**2 * vc / len(c) / mc**4)
    lift = mt / mc - 1
    gain = lift if higher else -lift
    sequential = _sequential(se, len(c) + len(t))
    delta = mde * mc
    power_se = math.sqrt(vc / len(c) + vc / len(t))
    z = stats.norm.ppf(0.975)
    return {
        "count": len(t),
        "mean": approx(mt),
        "variance": approx(vt),
        "lift": approx(lift),
        "absolute_lift": approx(mt - mc),
        "ci_low": approx(lift - quantile * se),
        "ci_high": approx(lift + quantile * se),
        "sequential_ci_low": approx(lift - sequential),
        "sequential_ci_high": approx(lift + sequential),
        "p_value": approx(p),
        "chance_to_beat_control": approx(stats.norm.cdf(gain / se)),
        "expected_loss": approx(se * stats.norm.pdf(gain / se) - gain * stats.norm.cdf(-gain / se)),
        "power": approx(
            stats.norm.cdf(delta / power_se - z) + stats.norm.cdf(-delta / power_se - z)
        ),
    }, math.ceil(2 * (z + stats.norm.ppf(0.8)) ** 2 * vc / delta**2)


def test_the_results_payload_matches_scipy_on_the_units_values(api_client, user, make_experiment):
    experiment = make_experiment(user, start=True, metrics=METRICS)
    rng = np.random.default_rng(7)
    per_unit = {"latency": defaultdict(list), "signup": defaultdict(list)}
    events = []
    for i in range(120):
        outcome = experiment_assign(experiment=experiment, unit_id=f"u{i}")
        variant = outcome.variant
        scale = 900 if variant.is_control else 820
        samples = rng.gamma(4, scale / 4, size=int(rng.integers(1, 4)))
        per_unit["latency"][variant.name].append(samples.mean())  # a unit's mean of its events
        converted = rng.random() < (0.2 if variant.is_control else 0.3)
        per_unit["signup"][variant.name].append(1.0 if converted else 0.0)
        events += [
            MetricEvent(
                experiment=experiment,
                variant=variant,
                assignment=outcome.assignment,
                metric="latency",
                value=float(v),
                source="client",
            )
            for v in samples
        ]
        if converted:
            events.append(
                MetricEvent(
                    experiment=experiment,
                    variant=variant,
                    assignment=outcome.assignment,
                    metric="signup",
                    value=1.0,
                    source="client",
                )
            )
    MetricEvent.objects.bulk_create(events)
    units = {name: len(per_unit["signup"][name]) for name in ("control", "friendly")}

    response = api_client.get(f"/api/v1/experiments/{experiment.pk}/results/")

    assert response.status_code == 200
    body = response.json()
    latency, latency_needed = _expected_row(
        per_unit["latency"]["control"],
        per_unit["latency"]["friendly"],
        binomial=False,
        higher=False,
        mde=0.1,
    )
    signup, signup_needed = _expected_row(
        per_unit["signup"]["control"],
        per_unit["signup"]["friendly"],
        binomial=True,
        higher=True,
        mde=0.05,
    )
    holm = _holm([latency["p_value"].expected, signup["p_value"].expected])
    control_latency = np.asarray(per_unit["latency"]["control"])
    control_signup = np.asarray(per_unit["signup"]["control"])
    srm = stats.chisquare([units["control"], units["friendly"]])

    def control_row(mean, variance, count):
        return {
            "variant": "control",
            "is_control": True,
            "count": count,
            "mean": approx(mean),
            "variance": approx(variance),
            **dict.fromkeys(
                [
                    "lift",
                    "absolute_lift",
                    "ci_low",
                    "ci_high",
                    "sequential_ci_low",
                    "sequential_ci_high",
                    "p_value",
                    "p_value_holm",
                    "significant",
                    "chance_to_beat_control",
                    "expected_loss",
                    "power",
                ]
            ),
        }

    assert body == {
        "experiment": {
            "id": str(experiment.pk),
            "key": "terse-or-friendly",
            "name": "Terse or friendly",
            "type": "prompt",
            "status": "running",
            "winner": None,
        },
        "confidence_level": 0.95,
        "traffic_percentage": 100.0,
        "units": 120,
        "variants": [
            {
                "name": "control",
                "is_control": True,
                "weight": 1.0,
                "units": units["control"],
                "configuration": {},
            },
            {
                "name": "friendly",
                "is_control": False,
                "weight": 1.0,
                "units": units["friendly"],
                "configuration": {"system_prompt": "Be warm and friendly."},
            },
        ],
        "srm": {
            "chi_square": approx(srm.statistic),
            "p_value": approx(srm.pvalue),
            "threshold": 0.001,
            "flagged": False,
            "observed": units,
            "expected": {"control": 60.0, "friendly": 60.0},
        },
        "metrics": [
            {
                "name": "latency",
                "type": "response_time",
                "role": "primary",
                "direction": "decrease",
                "aggregation": "mean",
                "kind": "mean",
                "minimum_detectable_effect": 0.1,
                "guardrail_threshold": 0.0,
                "sample_size_per_variant": latency_needed,
                "variants": [
                    control_row(
                        control_latency.mean(), control_latency.var(ddof=1), units["control"]
                    ),
                    {
                        "variant": "friendly",
                        "is_control": False,
                        **latency,
                        "p_value_holm": approx(holm[0]),
                        "significant": holm[0] < 0.05,
                    },
                ],
            },
            {
                "name": "signup",
                "type": "conversion",
                "role": "secondary",
                "direction": "increase",
                "aggregation": "max",
                "kind": "binomial",
                "minimum_detectable_effect": 0.05,
                "guardrail_threshold": 0.0,
                "sample_size_per_variant": signup_needed,
                "variants": [
                    control_row(
                        control_signup.mean(),
                        control_signup.mean() * (1 - control_signup.mean()),
                        units["control"],
                    ),
                    {
                        "variant": "friendly",
                        "is_control": False,
                        **signup,
                        "p_value_holm": approx(holm[1]),
                        "significant": holm[1] < 0.05,
                    },
                ],
            },
        ],
        "alerts": [],
    }


def _holm(p):
    order = sorted(range(len(p)), key=lambda i: p[i])
    adjusted, running = [0.0] * len(p), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def test_a_skewed_split_is_flagged_as_a_sample_ratio_mismatch(api_client, user, make_experiment):
    experiment = make_experiment(user, start=True)
    control, friendly = experiment.variants.all()
    # As if a bug dropped most of one arm's units: 700 against 300 on a 50/50 split.
    Assignment.objects.bulk_create(
        [
            Assignment(
                experiment=experiment,
                variant=control if i < 700 else friendly,
                unit_id=f"u{i}",
                source="api",
            )
            for i in range(1000)
        ]
    )

    srm = api_client.get(f"/api/v1/experiments/{experiment.pk}/results/").json()["srm"]

    reference = stats.chisquare([700, 300])
    assert srm["flagged"] is True
    assert srm["p_value"] == approx(reference.pvalue) and srm["p_value"] < 0.001
    assert srm["observed"] == {"control": 700, "friendly": 300}


def test_an_experiment_without_data_answers_nulls_not_errors(api_client, user, make_experiment):
    experiment = make_experiment(user)

    body = api_client.get(f"/api/v1/experiments/{experiment.pk}/results/").json()

    assert body["units"] == 0
    assert body["srm"]["flagged"] is False and body["srm"]["p_value"] == 1.0
    row = body["metrics"][0]["variants"][1]
    assert (row["count"], row["mean"], row["lift"], row["p_value"]) == (0, None, None, None)


# --- the events endpoint --------------------------------------------------------------------
def post_event(client, experiment, **body):
    return client.post(f"/api/v1/experiments/{experiment.pk}/events/", body, format="json")


def test_a_client_posts_an_event_for_an_assigned_unit(api_client, user, make_experiment):
    experiment = make_experiment(user, start=True, metrics=METRICS)
    variant = experiment_assign(experiment=experiment, unit_id="client-1").variant

    response = post_event(api_client, experiment, user_id="client-1", metric="signup", value=1)

    assert response.status_code == 201
    event = MetricEvent.objects.get()
    assert response.json() == {
        "id": event.pk,
        "user_id": "client-1",
        "variant": variant.name,
        "metric": "signup",
        "value": 1.0,
        "source": "client",
        "created_at": response.json()["created_at"],
    }


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"user_id": "client-1", "metric": "nope", "value": 1}, 400, "validation_error", "metric"),
        ({"user_id": "client-1", "metric": "signup", "value": 2}, 400, "validation_error", "value"),
        ({"user_id": "stranger", "metric": "signup", "value": 1}, 400, "not_assigned", "user_id"),
        (
            {"user_id": "client-1", "metric": "signup", "value": "1"},
            400,
            "validation_error",
            "value",
        ),
        ({"user_id": "client-1", "metric": "signup"}, 400, "validation_error", "value"),
        (
            {"user_id": "client-1", "metric": "signup", "value": 1, "x": 1},
            400,
            "validation_error",
            "x",
        ),
    ],
)
def test_bad_events_are_refused_in_the_envelope(
    api_client, user, make_experiment, body, status, code, field
):
    experiment = make_experiment(user, start=True, metrics=METRICS)
    experiment_assign(experiment=experiment, unit_id="client-1")

    response = post_event(api_client, experiment, **body)

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert field in response.json()["error"]["details"]
    assert not MetricEvent.objects.exists()


def test_a_draft_takes_no_events(api_client, user, make_experiment):
    experiment = make_experiment(user, metrics=METRICS)

    response = post_event(api_client, experiment, user_id="u", metric="signup", value=1)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "experiment_not_running"
