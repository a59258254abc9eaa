"""Experiments' definitions and lifecycle: create, update (frozen once started), delete;
draft -> running <-> paused -> completed with a winner, or cancelled."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import User
from accounts.services import log_action
from core.errors import ApplicationError, Conflict, NotFound
from experiments import rules
from experiments.events import experiment_event_emit
from experiments.models import (
    Experiment,
    Metric,
    Variant,
)

Status = Experiment.Status
# What may change once an experiment has started: the rest (variants, metrics, key, type,
# allocation, targeting, scope) is frozen, or the units already assigned would have been
# split by other rules than the results describe.
EDITABLE_WHILE_RUNNING = frozenset(
    {"name", "description", "traffic_percentage", "ramp_schedule", "confidence_level", "end_at"}
)
EDITABLE_WHEN_ENDED = frozenset({"name", "description"})
FIELDS = (
    "name",
    "key",
    "description",
    "type",
    "allocation",
    "traffic_percentage",
    "ramp_schedule",
    "targeting",
    "agent_id",
    "confidence_level",
    "start_at",
    "end_at",
)


# --- create, update, delete ------------------------------------------------------------------
def _set_children(
    experiment: Experiment,
    variants: list[dict[str, Any]] | None,
    metrics: list[dict[str, Any]] | None,
) -> None:
    if variants is not None:
        experiment.variants.all().delete()
        Variant.objects.bulk_create(
            [Variant(experiment=experiment, position=i, **v) for i, v in enumerate(variants)]
        )
    if metrics is not None:
        experiment.metrics.all().delete()
        Metric.objects.bulk_create(
            [Metric(experiment=experiment, position=i, **m) for i, m in enumerate(metrics)]
        )


def _key_taken(key: str) -> ApplicationError:
    return ApplicationError(
        "You already have an experiment with this key.",
        code="validation_error",
        details={"key": ["Already used by another of your experiments."]},
    )


def experiment_create(
    *,
    owner: User,
    name: str,
    key: str,
    type: str,
    variants: list[dict[str, Any]] | None = None,
    metrics: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> Experiment:
    """A draft experiment with its variants and metrics (both may come later)."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ApplicationError(f"Unknown fields: {', '.join(sorted(unknown))}.")
    fields = rules.settings_validate({"name": name, "key": key, "type": type, **fields})
    cleaned_variants = rules.variants_validate(type, variants or [])
    cleaned_metrics = rules.metrics_validate(metrics or [])
    experiment = Experiment(owner=owner, **fields)
    try:
        with transaction.atomic():
            experiment.save(force_insert=True)
            _set_children(experiment, cleaned_variants, cleaned_metrics)
    except IntegrityError as exc:
        raise _key_taken(key) from exc
    log_action(actor=owner, action="experiment.create", target=experiment, details={"key": key})
    return experiment


def _locked(experiment: Experiment) -> Experiment:
    locked = Experiment.objects.select_for_update().filter(pk=experiment.pk).first()
    if locked is None:
        raise NotFound("Not found.")
    return locked


def experiment_update(
    *,
    experiment: Experiment,
    actor: User,
    variants: list[dict[str, Any]] | None = None,
    metrics: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> Experiment:
    """Change what is given. A draft changes freely; once started, the variants, metrics and
    assignment rules are frozen (409 ``experiment_frozen``), and once ended only the name and
    description change. Given variants or metrics replace the lists."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ApplicationError(f"Unknown fields: {', '.join(sorted(unknown))}.")
    with transaction.atomic():
        current = _locked(experiment)
        changing = set(fields) | {
            n for n, v in (("variants", variants), ("metrics", metrics)) if v is not None
        }
        if current.status != Status.DRAFT:
            allowed = (
                EDITABLE_WHILE_RUNNING
                if current.status in (Status.RUNNING, Status.PAUSED)
                else EDITABLE_WHEN_ENDED
            )
            # A value sent back as it is (a client's GET body) changes nothing: not refused.
            unchanged = {
                "variants": _same(
                    variants, _variant_rows(current), rules.variants_validate, current.type
                ),
                "metrics": _same(metrics, _metric_rows(current), rules.metrics_validate),
            }
            frozen = sorted(
                name
                for name in changing
                if name not in allowed
                and not (
                    unchanged[name] if name in unchanged else fields[name] == getattr(current, name)
                )
            )
            if unchanged["variants"]:
                variants = None
            if unchanged["metrics"]:
                metrics = None
            if frozen:
                raise Conflict(
                    f"A {current.status} experiment's {', '.join(frozen)} cannot change.",
                    code="experiment_frozen",
                    details={name: ["Frozen once the experiment has started."] for name in frozen},
                )
        kind = fields.get("type", current.type)
        fields = rules.settings_validate(dict(fields))
        cleaned_variants = rules.variants_validate(kind, variants) if variants is not None else None
        if cleaned_variants is None and "type" in fields and fields["type"] != current.type:
            # The variants' configurations must fit the new type.
            rules.variants_validate(kind, _variant_rows(current))
        cleaned_metrics = rules.metrics_validate(metrics) if metrics is not None else None
        for name, value in fields.items():
            setattr(current, name, value)
        try:
            with transaction.atomic():
                current.save()
                _set_children(current, cleaned_variants, cleaned_metrics)
        except IntegrityError as exc:
            raise _key_taken(str(fields.get("key"))) from exc
    log_action(
        actor=actor,
        action="experiment.update",
        target=current,
        details={"fields": sorted(changing)},
    )
    return current


def _variant_rows(experiment: Experiment) -> list[dict[str, Any]]:
    return [
        {
            "name": v.name,
            "is_control": v.is_control,
            "weight": v.weight,
            "configuration": v.configuration,
        }
        for v in experiment.variants.all()
    ]


def _metric_rows(experiment: Experiment) -> list[dict[str, Any]]:
    return [
        {name: getattr(m, name) for name in rules.METRIC_FIELDS} for m in experiment.metrics.all()
    ]


def _same(
    given: list[dict[str, Any]] | None, current: list[dict[str, Any]], check: Any, *args: Any
) -> bool:
    if given is None:
        return False
    try:
        return check(*args, given) == check(*args, current)
    except ApplicationError:
        return False


def experiment_delete(*, experiment: Experiment, actor: User) -> None:
    """Delete a draft or an ended experiment with its records; a running or paused one is
    ended first (409)."""
    if experiment.status in (Status.RUNNING, Status.PAUSED):
        raise Conflict(
            "Complete or cancel the experiment before deleting it.",
            code="experiment_active",
            details={"status": experiment.status},
        )
    log_action(
        actor=actor, action="experiment.delete", target=experiment, details={"key": experiment.key}
    )
    experiment.delete()


# --- lifecycle -------------------------------------------------------------------------------
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "start": (Status.DRAFT, Status.PAUSED),
    "pause": (Status.RUNNING,),
    "complete": (Status.RUNNING, Status.PAUSED),
    "cancel": (Status.DRAFT, Status.RUNNING, Status.PAUSED),
}


def _invalid_transition(experiment: Experiment, action: str) -> Conflict:
    allowed = " or ".join(TRANSITIONS[action])
    return Conflict(
        f"A {experiment.status} experiment cannot {action}: only a {allowed} one can.",
        code="invalid_transition",
        details={"status": experiment.status, "action": action},
    )


def _transition(
    experiment: Experiment,
    action: str,
    actor: User | None,
    details: dict[str, Any] | None = None,
    **changes: Any,
) -> Experiment:
    was = experiment.status
    with transaction.atomic():
        # A conditional UPDATE: of two concurrent transitions exactly one wins; the other
        # sees the status it lost to.
        moved = Experiment.objects.filter(pk=experiment.pk, status__in=TRANSITIONS[action]).update(
            updated_at=timezone.now(), **changes
        )
        experiment.refresh_from_db()
        if not moved:
            raise _invalid_transition(experiment, action)
        log_action(
            actor=actor, action=f"experiment.{action}", target=experiment, details=details or {}
        )
        experiment_event_emit(
            EVENT_OF[action], experiment, **_event_extra(action, experiment, was, details or {})
        )
    return experiment


EVENT_OF = {
    "start": "experiment.started",
    "pause": "experiment.paused",
    "complete": "experiment.completed",
    "cancel": "experiment.cancelled",
}


def _event_extra(
    action: str, experiment: Experiment, was: str, details: dict[str, Any]
) -> dict[str, Any]:
    if action == "start":
        return {"resumed": was == Status.PAUSED}
    if action == "pause":
        return {"reason": details.get("reason", "")}
    if action == "complete":
        return {
            "winner": experiment.winner.name if experiment.winner else "",
            "promoted_to": experiment.promoted_to,
        }
    return {}


def experiment_start(*, experiment: Experiment, actor: User | None) -> Experiment:
    """Start a draft (it must have two variants, one the control, and a primary metric) or
    resume a paused experiment."""
    experiment.refresh_from_db()
    if experiment.status not in TRANSITIONS["start"]:
        raise _invalid_transition(experiment, "start")
    problems = rules.start_problems(experiment)
    if problems:
        raise Conflict("The experiment cannot start yet.", code="not_ready", details=problems)
    now = timezone.now()
    return _transition(
        experiment,
        "start",
        actor,
        status=Status.RUNNING,
        started_at=experiment.started_at or now,
        paused_at=None,
    )


def experiment_pause(*, experiment: Experiment, actor: User | None, reason: str = "") -> Experiment:
    """Stop assigning units and changing turns; the assignments stay for a resume."""
    return _transition(
        experiment,
        "pause",
        actor,
        details={"reason": reason} if reason else None,
        status=Status.PAUSED,
        paused_at=timezone.now(),
    )


def experiment_complete(
    *, experiment: Experiment, actor: User | None, winner: str, promote: str = ""
) -> Experiment:
    """End the experiment with its winning variant (by name). ``promote="defaults"`` keeps
    serving the winner's configuration to every turn the experiment covered; promoting to
    the agent is written by the caller (agents sit above experiments) in the same
    transaction."""
    chosen = experiment.variants.filter(name=winner).first()
    if chosen is None:
        raise ApplicationError(
            "The winner must be one of the experiment's variants.",
            code="validation_error",
            details={"winner": [f"No variant is called {winner!r}."]},
        )
    if promote not in Experiment.Promotion.values:
        raise ApplicationError(
            "Invalid input.",
            code="validation_error",
            details={"promote": ["agent, defaults, or empty."]},
        )
    if promote == Experiment.Promotion.AGENT and experiment.agent_id is None:
        raise ApplicationError(
            "Only an experiment on an agent can promote its winner to the agent.",
            code="validation_error",
            details={"promote": ["This experiment covers no agent."]},
        )
    return _transition(
        experiment,
        "complete",
        actor,
        details={"winner": winner, "promote": promote},
        status=Status.COMPLETED,
        completed_at=timezone.now(),
        winner=chosen,
        promoted_to=promote,
    )


def experiment_cancel(*, experiment: Experiment, actor: User | None) -> Experiment:
    """End the experiment without a winner."""
    return _transition(
        experiment, "cancel", actor, status=Status.CANCELLED, completed_at=timezone.now()
    )
