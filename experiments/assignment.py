"""Deterministic assignment: a unit's traffic inclusion and its variant each come from a hash
of the experiment's key and the unit's id, with different salts, so that whether a unit is
included and which variant it gets are independent. Raising the traffic only includes more
units (the inclusion threshold moves up, the variant hash does not change), and stored
assignments are read back, so ramping up never moves an assigned unit."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from experiments.models import Experiment, Variant

TRAFFIC_SALT = "traffic"
VARIANT_SALT = "variant"


def unit_hash(key: str, unit_id: str, salt: str) -> float:
    """A uniform number in [0, 1) for (salt, key, unit): the first 64 bits of a SHA-256."""
    digest = hashlib.sha256(f"{salt}\x1f{key}\x1f{unit_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_weights(experiment: Experiment, variants: Sequence[Variant]) -> list[float]:
    """The share each variant should get: equal for an equal split, else the weights."""
    if experiment.allocation == Experiment.Allocation.EQUAL:
        return [1.0] * len(variants)
    return [max(0.0, float(v.weight)) for v in variants]


def variant_for(experiment: Experiment, variants: Sequence[Variant], unit_id: str) -> Variant:
    """The variant the unit's hash falls on, the variants' shares laid end to end."""
    weights = split_weights(experiment, variants)
    total = sum(weights)
    point = unit_hash(experiment.key, unit_id, VARIANT_SALT) * total
    edge = 0.0
    for variant, weight in zip(variants, weights, strict=True):
        edge += weight
        if point < edge and weight > 0:
            return variant
    return next(v for v, w in zip(reversed(variants), reversed(weights), strict=True) if w > 0)


def traffic_at(experiment: Experiment, now: dt.datetime) -> float:
    """The share of units included now (0-100): a ramp's step in force (0 before its first
    step), else the experiment's traffic percentage."""
    if experiment.allocation != Experiment.Allocation.RAMP:
        return float(experiment.traffic_percentage)
    began = max(filter(None, [experiment.started_at, experiment.start_at]), default=None)
    if began is None:
        return 0.0
    hours = (now - began).total_seconds() / 3600
    percentage = 0.0
    for step in experiment.ramp_schedule:
        if step["hours"] <= hours:
            percentage = float(step["traffic_percentage"])
    return percentage


def included(experiment: Experiment, unit_id: str, now: dt.datetime) -> bool:
    return unit_hash(experiment.key, unit_id, TRAFFIC_SALT) * 100 < traffic_at(experiment, now)


def in_window(experiment: Experiment, now: dt.datetime) -> bool:
    if experiment.start_at is not None and now < experiment.start_at:
        return False
    return experiment.end_at is None or now < experiment.end_at


# --- targeting -------------------------------------------------------------------------------
def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _compare(actual: Any, expected: Any, test: Any) -> bool:
    a, e = _number(actual), _number(expected)
    if a is not None and e is not None:
        return bool(test(a, e))
    if isinstance(actual, str) and isinstance(expected, str):
        return bool(test(actual, expected))
    return False


def _contains(actual: Any, expected: Any) -> bool:
    if isinstance(actual, str) and isinstance(expected, str):
        return expected in actual
    if isinstance(actual, list):
        return expected in actual
    return False


OPERATORS: dict[str, Any] = {
    "eq": lambda actual, expected: actual == expected,
    "ne": lambda actual, expected: actual != expected,
    "in": lambda actual, expected: actual in expected,
    "not_in": lambda actual, expected: actual not in expected,
    "gt": lambda actual, expected: _compare(actual, expected, lambda a, e: a > e),
    "gte": lambda actual, expected: _compare(actual, expected, lambda a, e: a >= e),
    "lt": lambda actual, expected: _compare(actual, expected, lambda a, e: a < e),
    "lte": lambda actual, expected: _compare(actual, expected, lambda a, e: a <= e),
    "contains": _contains,
    "exists": lambda actual, expected: (actual is not None) == bool(expected),
}

_MISSING = object()


def rule_holds(rule: Mapping[str, Any], attributes: Mapping[str, Any]) -> bool:
    actual = attributes.get(rule["attribute"], _MISSING)
    if rule["operator"] == "exists":
        return OPERATORS["exists"](None if actual is _MISSING else actual, rule["value"])
    if actual is _MISSING:
        return rule["operator"] in ("ne", "not_in")
    return bool(OPERATORS[rule["operator"]](actual, rule["value"]))


def targeted(experiment: Experiment, attributes: Mapping[str, Any]) -> bool:
    """Every targeting rule holds for these attributes (no rules: everyone)."""
    return all(rule_holds(rule, attributes) for rule in experiment.targeting)
