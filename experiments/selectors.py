"""Reads: experiments a user may see, and their results (per metric and variant against
control, computed from per-unit aggregates in PostgreSQL and experiments.statistics)."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.db import connection
from django.db.models import Avg, Count, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from accounts.models import User
from core.errors import NotFound
from experiments import statistics
from experiments.assignment import split_weights, traffic_at
from experiments.models import Assignment, Experiment, Metric, MetricEvent, Variant


def experiment_list(*, user: User) -> QuerySet[Experiment]:
    """The user's experiments; staff see every one."""
    experiments = Experiment.objects.select_related("owner", "winner").prefetch_related(
        "variants", "metrics"
    )
    return experiments if user.is_staff else experiments.filter(owner=user)


def experiment_get(*, user: User, experiment_id: UUID | str) -> Experiment:
    experiment = experiment_list(user=user).filter(pk=experiment_id).first()
    if experiment is None:
        raise NotFound("Not found.")
    return experiment


def effective_traffic(experiment: Experiment) -> float:
    """The share of units included now (a ramp's current step)."""
    return traffic_at(experiment, timezone.now())


# --- per-unit aggregates -----------------------------------------------------------------------
_AGGREGATES = {"mean": "avg", "sum": "sum", "max": "max"}

# Mean metrics: each unit's events folded into one value (its mean, sum or max), then the
# units' mean and sample variance per variant: units, not events, are independent.
_UNIT_SQL = """
SELECT variant_id, count(*), avg(v), coalesce(var_samp(v), 0) FROM (
    SELECT variant_id, assignment_id, {aggregate}(value) AS v FROM {events}
    WHERE experiment_id = %s AND metric = %s GROUP BY variant_id, assignment_id
) per_unit GROUP BY variant_id
"""
# Conversions: every assigned unit counts, converted (an event of 1) or not.
_CONVERSION_SQL = """
SELECT a.variant_id, count(*), count(*) FILTER (WHERE converted.v >= 1) FROM {assignments} a
LEFT JOIN (
    SELECT assignment_id, max(value) AS v FROM {events}
    WHERE experiment_id = %s AND metric = %s GROUP BY assignment_id
) converted ON converted.assignment_id = a.id
WHERE a.experiment_id = %s GROUP BY a.variant_id
"""


def metric_samples(*, experiment: Experiment, metric: Metric) -> dict[int, statistics.Sample]:
    """Each variant's sample of a metric (by variant id)."""
    events = MetricEvent._meta.db_table
    with connection.cursor() as cursor:
        if metric.binomial:
            cursor.execute(
                _CONVERSION_SQL.format(assignments=Assignment._meta.db_table, events=events),
                [experiment.pk, metric.name, experiment.pk],
            )
            return {
                variant_id: statistics.Sample.proportion(successes, n)
                for variant_id, n, successes in cursor.fetchall()
            }
        cursor.execute(
            _UNIT_SQL.format(aggregate=_AGGREGATES[metric.aggregation], events=events),
            [experiment.pk, metric.name],
        )
        return {
            variant_id: statistics.Sample(n, float(mean), float(variance))
            for variant_id, n, mean, variance in cursor.fetchall()
        }


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _units(experiment: Experiment) -> dict[int, int]:
    return dict(
        Assignment.objects.filter(experiment=experiment)
        .values_list("variant")
        .annotate(n=Count("id"))
        .values_list("variant", "n")
    )


def _srm(variants: list[Variant], weights: list[float], units: dict[int, int]) -> dict[str, Any]:
    observed = [units.get(v.pk, 0) for v in variants]
    chi2, p, expected = statistics.srm(observed, weights)
    return {
        "chi_square": chi2,
        "p_value": p,
        "threshold": statistics.SRM_THRESHOLD,
        "flagged": p < statistics.SRM_THRESHOLD,
        "observed": {v.name: n for v, n in zip(variants, observed, strict=True)},
        "expected": {v.name: e for v, e in zip(variants, expected, strict=True)},
    }


def _metric_rows(
    experiment: Experiment, metric: Metric, variants: list[Variant], control: Variant | None
) -> tuple[list[dict[str, Any]], int | None]:
    samples = metric_samples(experiment=experiment, metric=metric)
    alpha = experiment.alpha
    higher = metric.direction == Metric.Direction.INCREASE
    base = samples.get(control.pk) if control is not None else None
    needed = (
        statistics.sample_size_per_variant(
            control=base, mde=metric.minimum_detectable_effect, alpha=alpha
        )
        if base is not None
        else None
    )
    rows = []
    for variant in variants:
        sample = samples.get(variant.pk) or statistics.Sample(0, 0.0, 0.0)
        row: dict[str, Any] = {
            "variant": variant.name,
            "is_control": variant.is_control,
            "count": sample.n,
            "mean": sample.mean if sample.n else None,
            "variance": sample.variance if sample.n > 1 else None,
            "lift": None,
            "absolute_lift": None,
            "ci_low": None,
            "ci_high": None,
            "sequential_ci_low": None,
            "sequential_ci_high": None,
            "p_value": None,
            "p_value_holm": None,
            "significant": None,
            "chance_to_beat_control": None,
            "expected_loss": None,
            "power": None,
        }
        if not variant.is_control and base is not None:
            lift = statistics.compare(
                base, sample, alpha=alpha, binomial=metric.binomial, higher_is_better=higher
            )
            if lift is not None:
                row.update(
                    lift=_finite(lift.point),
                    absolute_lift=_finite(lift.absolute),
                    ci_low=_finite(lift.ci_low),
                    ci_high=_finite(lift.ci_high),
                    sequential_ci_low=_finite(lift.sequential_low),
                    sequential_ci_high=_finite(lift.sequential_high),
                    p_value=_finite(lift.p_value),
                    chance_to_beat_control=_finite(lift.chance_to_beat_control),
                    expected_loss=_finite(lift.expected_loss),
                )
            row["power"] = _finite(
                statistics.power_at(
                    control=base,
                    n_treatment=sample.n,
                    mde=metric.minimum_detectable_effect,
                    alpha=alpha,
                )
            )
        rows.append(row)
    return rows, needed


def experiment_results(*, experiment: Experiment) -> dict[str, Any]:
    """Per metric and variant against control: units, mean, variance, relative lift with
    its interval (delta method) and its always-valid sequential interval, the p-value
    (Welch; two-proportion z for conversions) and its Holm adjustment across every metric
    and variant, chance to beat control, expected loss, power at the metric's minimum
    detectable effect and the units each variant needs for it; the sample-ratio check."""
    variants = list(experiment.variants.all())
    metrics = list(experiment.metrics.all())
    control = next((v for v in variants if v.is_control), None)
    units = _units(experiment)
    blocks = []
    for metric in metrics:
        rows, needed = _metric_rows(experiment, metric, variants, control)
        blocks.append(
            {
                "name": metric.name,
                "type": metric.type,
                "role": metric.role,
                "direction": metric.direction,
                "aggregation": metric.aggregation,
                "kind": "binomial" if metric.binomial else "mean",
                "minimum_detectable_effect": metric.minimum_detectable_effect,
                "guardrail_threshold": metric.guardrail_threshold,
                "sample_size_per_variant": needed,
                "variants": rows,
            }
        )
    # Holm across every comparison with a p-value: all metrics, all variants.
    tested = [row for block in blocks for row in block["variants"] if row["p_value"] is not None]
    for row, adjusted in zip(tested, statistics.holm([r["p_value"] for r in tested]), strict=True):
        row["p_value_holm"] = adjusted
        row["significant"] = adjusted < experiment.alpha
    weights = split_weights(experiment, variants)
    return {
        "experiment": {
            "id": str(experiment.pk),
            "key": experiment.key,
            "name": experiment.name,
            "type": experiment.type,
            "status": experiment.status,
            "winner": experiment.winner.name if experiment.winner_id else None,
        },
        "confidence_level": experiment.confidence_level,
        "traffic_percentage": effective_traffic(experiment),
        "units": sum(units.values()),
        "variants": [
            {
                "name": v.name,
                "is_control": v.is_control,
                "weight": w,
                "units": units.get(v.pk, 0),
                "configuration": v.configuration,
            }
            for v, w in zip(variants, weights, strict=True)
        ],
        "srm": _srm(variants, weights, units),
        "metrics": blocks,
        "alerts": [
            {
                "kind": alert.kind,
                "metric": alert.metric,
                "variant": alert.variant,
                "message": alert.message,
                "created_at": alert.created_at,
            }
            for alert in experiment.alerts.all()[:20]
        ],
    }


# --- the metric over time (the admin's plot) ---------------------------------------------------
@dataclass(frozen=True)
class MetricDay:
    day: dt.date
    variant: str
    mean: float
    count: int


def metric_daily(*, experiment: Experiment, metric: str) -> list[MetricDay]:
    """The daily mean of a metric's events per variant (UTC days)."""
    rows = (
        MetricEvent.objects.filter(experiment=experiment, metric=metric)
        .annotate(day=TruncDate("created_at", tzinfo=dt.UTC))
        .values("day", "variant__name")
        .annotate(mean=Avg("value"), count=Count("id"))
        .order_by("day", "variant__name")
    )
    return [MetricDay(r["day"], r["variant__name"], float(r["mean"]), r["count"]) for r in rows]
