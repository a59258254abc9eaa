"""What an experiment's definition must hold: its variants' configurations (the keys its type
changes), metrics, targeting rules and ramp schedule, and what starting it needs. Every
surface (the API, the admin, other apps) goes through these, so each accepts the same."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from core.errors import ApplicationError
from experiments.assignment import OPERATORS
from experiments.models import Experiment, Metric

MAX_VARIANTS = 20
MAX_METRICS = 20
MAX_RULES = 20
MAX_RAMP_STEPS = 20
NAME_PATTERN = r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$"
_NAME = re.compile(NAME_PATTERN)
# A provider name, then optionally :model (no whitespace, no NUL); `local` alone is valid.
MODEL_SPEC_PATTERN = r"^[a-z][a-z0-9_.-]{0,49}(?::[^\s\x00]{1,150})?$"
_MODEL_SPEC = re.compile(MODEL_SPEC_PATTERN)
# conversations knows the providers and sits above experiments: the composition root
# registers its check (and the pattern of what it accepts, for the schema) at start-up.
_model_checks: list[Callable[[str], object]] = []
_model_patterns: list[Callable[[], str]] = []
SYSTEM_PROMPT_MAX_CHARS = 20_000
WORKFLOWS = ("basic", "rag")

# What each type of experiment changes in a turn.
CONFIGURATION_KEYS: dict[str, tuple[str, ...]] = {
    Experiment.Type.PROMPT: ("system_prompt",),
    Experiment.Type.MODEL: ("model",),
    Experiment.Type.PARAMETER: ("temperature", "max_tokens"),
    Experiment.Type.WORKFLOW: ("workflow",),
}
ALL_CONFIGURATION_KEYS = ("system_prompt", "model", "temperature", "max_tokens", "workflow")

# Lower is better for what costs; higher for the rest.
DEFAULT_DIRECTION = {
    Metric.Type.RESPONSE_TIME: Metric.Direction.DECREASE,
    Metric.Type.ERROR_RATE: Metric.Direction.DECREASE,
    Metric.Type.TOKEN_USAGE: Metric.Direction.DECREASE,
    Metric.Type.COST: Metric.Direction.DECREASE,
}
DEFAULT_AGGREGATION = {
    Metric.Type.ENGAGEMENT: Metric.Aggregation.SUM,
    Metric.Type.CONVERSION: Metric.Aggregation.MAX,
}


def register_model_spec_check(check: Callable[[str], object]) -> None:
    """``check(spec)`` raises ApplicationError for a spec no provider here answers."""
    if check not in _model_checks:
        _model_checks.append(check)


def register_model_spec_pattern(pattern: Callable[[], str]) -> None:
    """``pattern()``: the regex of the specs the registered check accepts."""
    if pattern not in _model_patterns:
        _model_patterns.append(pattern)


def model_spec_pattern() -> str:
    """The schema's pattern of a variant's model: the grammar, and the registered pattern."""
    if not _model_patterns:
        return MODEL_SPEC_PATTERN
    return f"^(?={MODEL_SPEC_PATTERN[1:]}){_model_patterns[-1]()[1:]}"


def _model_validate(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _MODEL_SPEC.match(value):
        raise invalid(where, "model: a spec like openai:gpt-4o-mini or local.")
    for check in _model_checks:
        try:
            check(value)
        except ApplicationError as exc:
            raise ApplicationError(
                exc.message, code=exc.code, details={where: [exc.message]}
            ) from exc
    return value


def invalid(field: str, *problems: str) -> ApplicationError:
    return ApplicationError(
        "Invalid input.", code="validation_error", details={field: list(problems)}
    )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or len(value) > 64 or not _NAME.match(value):
        raise invalid(where, "A name of lowercase letters, digits and single - or _ (64 at most).")
    return value


def configuration_validate(kind: str, configuration: Any, *, where: str) -> dict[str, Any]:
    """A variant's configuration: only the keys its experiment's type changes, each valid."""
    if not isinstance(configuration, dict):
        raise invalid(where, "An object.")
    allowed = CONFIGURATION_KEYS.get(kind, ())
    unknown = sorted(str(k) for k in configuration if k not in allowed)
    if unknown:
        raise invalid(
            where,
            f"A {kind} experiment's variants set only {', '.join(allowed)}; "
            f"not {', '.join(unknown)}.",
        )
    for name, value in configuration.items():
        if name == "system_prompt":
            if (
                not isinstance(value, str)
                or len(value) > SYSTEM_PROMPT_MAX_CHARS
                or "\x00" in value
            ):
                raise invalid(where, f"system_prompt: text of at most {SYSTEM_PROMPT_MAX_CHARS}.")
        elif name == "model":
            _model_validate(value, where)
        elif name == "temperature":
            if not _number(value) or not 0 <= value <= 2:
                raise invalid(where, "temperature: a number from 0 to 2.")
        elif name == "max_tokens":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 200_000:
                raise invalid(where, "max_tokens: an integer from 1 to 200000.")
        elif name == "workflow" and value not in WORKFLOWS:
            raise invalid(where, f"workflow: one of {', '.join(WORKFLOWS)}.")
    return dict(configuration)


def variants_validate(kind: str, variants: Any) -> list[dict[str, Any]]:
    """The variants as given: names unique, at most one control, weights of 0 or more."""
    if not isinstance(variants, list) or len(variants) > MAX_VARIANTS:
        raise invalid("variants", f"A list of at most {MAX_VARIANTS} variants.")
    cleaned: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, variant in enumerate(variants):
        where = f"variants[{index}]"
        if not isinstance(variant, dict):
            raise invalid(where, "An object: name, is_control, weight, configuration.")
        unknown = sorted(set(variant) - {"name", "is_control", "weight", "configuration"})
        if unknown:
            raise invalid(where, f"Unknown fields: {', '.join(unknown)}.")
        name = _name(variant.get("name"), f"{where}.name")
        if name in seen:
            raise invalid(f"{where}.name", f"Two variants are called {name!r}.")
        seen.add(name)
        weight = variant.get("weight", 1.0)
        if not _number(weight) or not 0 <= weight <= 1_000_000:
            raise invalid(f"{where}.weight", "A number from 0 to 1000000.")
        is_control = variant.get("is_control", False)
        if not isinstance(is_control, bool):
            raise invalid(f"{where}.is_control", "true or false.")
        cleaned.append(
            {
                "name": name,
                "is_control": is_control,
                "weight": float(weight),
                "configuration": configuration_validate(
                    kind, variant.get("configuration", {}), where=f"{where}.configuration"
                ),
            }
        )
    if sum(v["is_control"] for v in cleaned) > 1:
        raise invalid("variants", "Only one variant is the control.")
    return cleaned


METRIC_FIELDS = {
    "name",
    "type",
    "aggregation",
    "direction",
    "primary",
    "guardrail",
    "minimum_detectable_effect",
    "guardrail_threshold",
}


def metrics_validate(metrics: Any) -> list[dict[str, Any]]:
    """The metrics: names unique, at most one primary, a guardrail never the primary."""
    if not isinstance(metrics, list) or len(metrics) > MAX_METRICS:
        raise invalid("metrics", f"A list of at most {MAX_METRICS} metrics.")
    cleaned: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, metric in enumerate(metrics):
        where = f"metrics[{index}]"
        if not isinstance(metric, dict):
            raise invalid(where, "An object: name, type, direction, primary, ...")
        unknown = sorted(set(metric) - METRIC_FIELDS)
        if unknown:
            raise invalid(where, f"Unknown fields: {', '.join(unknown)}.")
        name = _name(metric.get("name"), f"{where}.name")
        if name in seen:
            raise invalid(f"{where}.name", f"Two metrics are called {name!r}.")
        seen.add(name)
        kind = metric.get("type")
        if kind not in Metric.Type.values:
            raise invalid(f"{where}.type", f"One of {', '.join(Metric.Type.values)}.")
        aggregation = metric.get("aggregation") or DEFAULT_AGGREGATION.get(kind, "mean")
        if aggregation not in Metric.Aggregation.values:
            raise invalid(f"{where}.aggregation", "mean, sum or max.")
        if kind == Metric.Type.CONVERSION and aggregation != Metric.Aggregation.MAX:
            raise invalid(f"{where}.aggregation", "A conversion is max (converted or not).")
        direction = metric.get("direction") or DEFAULT_DIRECTION.get(kind, "increase")
        if direction not in Metric.Direction.values:
            raise invalid(f"{where}.direction", "increase or decrease.")
        flags = {}
        for flag in ("primary", "guardrail"):
            flags[flag] = metric.get(flag, False)
            if not isinstance(flags[flag], bool):
                raise invalid(f"{where}.{flag}", "true or false.")
        if flags["primary"] and flags["guardrail"]:
            raise invalid(where, "A metric is the primary or a guardrail, not both.")
        mde = metric.get("minimum_detectable_effect", 0.05)
        if not _number(mde) or not 0 < mde <= 10:
            raise invalid(f"{where}.minimum_detectable_effect", "A relative effect, 0 to 10.")
        threshold = metric.get("guardrail_threshold", 0.0)
        if not _number(threshold) or not 0 <= threshold <= 10:
            raise invalid(f"{where}.guardrail_threshold", "A relative degradation, 0 to 10.")
        cleaned.append(
            {
                "name": name,
                "type": kind,
                "aggregation": aggregation,
                "direction": direction,
                **flags,
                "minimum_detectable_effect": float(mde),
                "guardrail_threshold": float(threshold),
            }
        )
    if sum(m["primary"] for m in cleaned) > 1:
        raise invalid("metrics", "Only one metric is the primary.")
    return cleaned


def targeting_validate(rules: Any) -> list[dict[str, Any]]:
    """Rules {attribute, operator, value}; in/not_in take a list, exists a boolean."""
    if not isinstance(rules, list) or len(rules) > MAX_RULES:
        raise invalid("targeting", f"A list of at most {MAX_RULES} rules.")
    cleaned = []
    for index, rule in enumerate(rules):
        where = f"targeting[{index}]"
        if not isinstance(rule, dict) or set(rule) - {"attribute", "operator", "value"}:
            raise invalid(where, "An object: attribute, operator, value.")
        attribute = rule.get("attribute")
        if not isinstance(attribute, str) or not 0 < len(attribute) <= 64 or "\x00" in attribute:
            raise invalid(f"{where}.attribute", "An attribute name (64 characters at most).")
        operator = rule.get("operator")
        if operator not in OPERATORS:
            raise invalid(f"{where}.operator", f"One of {', '.join(OPERATORS)}.")
        value = rule.get("value")
        if operator in ("in", "not_in") and not isinstance(value, list):
            raise invalid(f"{where}.value", f"{operator} takes a list of values.")
        if operator == "exists" and not isinstance(value, bool):
            raise invalid(f"{where}.value", "exists takes true or false.")
        if operator in ("gt", "gte", "lt", "lte") and not (
            _number(value) or isinstance(value, str)
        ):
            raise invalid(f"{where}.value", f"{operator} compares with a number or a string.")
        cleaned.append({"attribute": attribute, "operator": operator, "value": value})
    return cleaned


def ramp_validate(steps: Any) -> list[dict[str, Any]]:
    """Steps {hours, traffic_percentage}: hours after the start ascending, traffic rising."""
    if not isinstance(steps, list) or len(steps) > MAX_RAMP_STEPS:
        raise invalid("ramp_schedule", f"A list of at most {MAX_RAMP_STEPS} steps.")
    cleaned: list[dict[str, Any]] = []
    for index, step in enumerate(steps):
        where = f"ramp_schedule[{index}]"
        if not isinstance(step, dict) or set(step) != {"hours", "traffic_percentage"}:
            raise invalid(where, "An object: hours, traffic_percentage.")
        hours, share = step["hours"], step["traffic_percentage"]
        if not _number(hours) or not 0 <= hours <= 24 * 366:
            raise invalid(f"{where}.hours", "Hours after the start, 0 to 8784.")
        if not _number(share) or not 0 <= share <= 100:
            raise invalid(f"{where}.traffic_percentage", "A percentage, 0 to 100.")
        if cleaned and hours <= cleaned[-1]["hours"]:
            raise invalid(f"{where}.hours", "Steps come in ascending hours.")
        if cleaned and share < cleaned[-1]["traffic_percentage"]:
            raise invalid(
                f"{where}.traffic_percentage", "A ramp only rises: it never drops traffic."
            )
        cleaned.append({"hours": float(hours), "traffic_percentage": float(share)})
    return cleaned


def settings_validate(fields: dict[str, Any]) -> dict[str, Any]:
    """The experiment's own fields among ``fields`` (what is given is checked)."""
    if "traffic_percentage" in fields:
        share = fields["traffic_percentage"]
        if not _number(share) or not 0 <= share <= 100:
            raise invalid("traffic_percentage", "A percentage, 0 to 100.")
    if "confidence_level" in fields:
        level = fields["confidence_level"]
        if not _number(level) or not 0.5 <= level <= 0.999:
            raise invalid("confidence_level", "From 0.5 to 0.999 (0.95: 95%).")
    if "type" in fields and fields["type"] not in Experiment.Type.values:
        raise invalid("type", f"One of {', '.join(Experiment.Type.values)}.")
    if "allocation" in fields and fields["allocation"] not in Experiment.Allocation.values:
        raise invalid("allocation", f"One of {', '.join(Experiment.Allocation.values)}.")
    if "key" in fields:
        _name(fields["key"], "key")
    if "name" in fields:
        name = fields["name"]
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise invalid("name", "A name of 1 to 200 characters.")
    if "targeting" in fields:
        fields["targeting"] = targeting_validate(fields["targeting"])
    if "ramp_schedule" in fields:
        fields["ramp_schedule"] = ramp_validate(fields["ramp_schedule"])
    return fields


def start_problems(experiment: Experiment) -> dict[str, list[str]]:
    """Why the experiment cannot start yet ({} when it can)."""
    variants = list(experiment.variants.all())
    metrics = list(experiment.metrics.all())
    problems: dict[str, list[str]] = {}
    if len(variants) < 2:
        problems["variants"] = ["At least two variants."]
    elif sum(v.is_control for v in variants) != 1:
        problems["variants"] = ["Exactly one variant is the control."]
    elif experiment.allocation != Experiment.Allocation.EQUAL and not any(
        v.weight > 0 for v in variants
    ):
        problems["variants"] = ["At least one variant has a weight above 0."]
    if sum(m.primary for m in metrics) != 1:
        problems["metrics"] = ["Exactly one primary metric."]
    if experiment.allocation == Experiment.Allocation.RAMP and not experiment.ramp_schedule:
        problems["ramp_schedule"] = ["A gradual rollout needs its schedule."]
    if experiment.allocation == Experiment.Allocation.TARGETED and not experiment.targeting:
        problems["targeting"] = ["A targeted experiment needs its rules."]
    start, end = experiment.start_at, experiment.end_at
    if start is not None and end is not None and end <= start:
        problems["end_at"] = ["After start_at."]
    return problems
