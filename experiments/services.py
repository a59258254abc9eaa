"""Writes: experiments (create, update, delete), their lifecycle (draft -> running <-> paused
-> completed with a winner, or cancelled), assignments, metric events, and the guardrail
check that pauses a degrading experiment.

The conversation turn calls three functions here (conversations sits above experiments):
``turn_overrides`` (which running experiments cover this reply, its variants'
configuration), ``turn_metrics_record`` (the reply's latency, tokens, cost and error as
metric events) and ``turn_feedback_record`` (a rating of the reply as a metric event).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import User
from accounts.services import log_action
from core.errors import ApplicationError, Conflict, NotFound
from experiments import rules
from experiments.assignment import in_window, included, targeted, variant_for
from experiments.models import (
    Assignment,
    Experiment,
    ExperimentAlert,
    Exposure,
    Metric,
    MetricEvent,
    Variant,
)
from experiments.selectors import experiment_results
from jobs.services import enqueue

logger = logging.getLogger("chatter.experiments")

Status = Experiment.Status
GUARDRAILS_HANDLER = "experiment_guardrails_check"
GUARDRAIL_CHECK_INTERVAL = dt.timedelta(seconds=60)

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
            frozen = sorted(
                name
                for name in changing
                if name not in allowed
                and (name in ("variants", "metrics") or fields[name] != getattr(current, name))
            )
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
            rules.variants_validate(
                kind,
                [
                    {
                        "name": v.name,
                        "is_control": v.is_control,
                        "weight": v.weight,
                        "configuration": v.configuration,
                    }
                    for v in current.variants.all()
                ],
            )
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
    # A conditional UPDATE: of two concurrent transitions exactly one wins; the other sees
    # the status it lost to.
    moved = Experiment.objects.filter(pk=experiment.pk, status__in=TRANSITIONS[action]).update(
        updated_at=timezone.now(), **changes
    )
    experiment.refresh_from_db()
    if not moved:
        raise _invalid_transition(experiment, action)
    log_action(actor=actor, action=f"experiment.{action}", target=experiment, details=details or {})
    return experiment


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


# --- assignment ------------------------------------------------------------------------------
@dataclass(frozen=True)
class AssignmentOutcome:
    """The unit's variant, or None with why it is not in the experiment."""

    assignment: Assignment | None
    reason: str  # assigned, existing, not_started, ended, targeting, traffic
    variant: Variant | None = None


def _not_running(experiment: Experiment) -> Conflict:
    return Conflict(
        f"The experiment is {experiment.status}: only a running experiment assigns units.",
        code="experiment_not_running",
        details={"status": experiment.status},
    )


def _eligibility(
    experiment: Experiment, unit_id: str, attributes: dict[str, Any], now: dt.datetime
) -> str:
    if experiment.start_at is not None and now < experiment.start_at:
        return "not_started"
    if not in_window(experiment, now):
        return "ended"
    if not targeted(experiment, attributes):
        return "targeting"
    if not included(experiment, unit_id, now):
        return "traffic"
    return "assigned"


def experiment_assign(
    *, experiment: Experiment, unit_id: str, attributes: dict[str, Any] | None = None
) -> AssignmentOutcome:
    """The unit's sticky variant: its stored assignment, else (when its attributes match the
    targeting and its traffic hash falls inside the traffic share) the variant its hash
    selects, stored now. A unit outside gets None and the reason."""
    attributes = attributes or {}
    if not isinstance(unit_id, str) or not 0 < len(unit_id) <= 200:
        raise rules.invalid("user_id", "An id of 1 to 200 characters.")
    if experiment.status != Status.RUNNING:
        raise _not_running(experiment)
    existing = (
        Assignment.objects.select_related("variant")
        .filter(experiment=experiment, unit_id=unit_id)
        .first()
    )
    if existing is not None:
        return AssignmentOutcome(existing, "existing", existing.variant)
    reason = _eligibility(experiment, unit_id, attributes, timezone.now())
    if reason != "assigned":
        return AssignmentOutcome(None, reason)
    variant = variant_for(experiment, list(experiment.variants.all()), unit_id)
    assignment, created = Assignment.objects.select_related("variant").get_or_create(
        experiment=experiment,
        unit_id=unit_id,
        defaults={"variant": variant, "attributes": attributes, "source": Assignment.Source.API},
    )
    return AssignmentOutcome(assignment, "assigned" if created else "existing", assignment.variant)


# --- metric events ---------------------------------------------------------------------------
def metric_event_record(
    *, experiment: Experiment, unit_id: str, metric: str, value: float
) -> MetricEvent:
    """A client's event for an assigned unit: a custom metric, a conversion (0 or 1), ...
    Taken while the experiment runs or is paused (late events count); 409 otherwise."""
    if experiment.status not in (Status.RUNNING, Status.PAUSED):
        raise Conflict(
            f"The experiment is {experiment.status}: it takes events only while it runs or "
            "is paused.",
            code="experiment_not_running",
            details={"status": experiment.status},
        )
    definition = experiment.metrics.filter(name=metric).first()
    if definition is None:
        raise rules.invalid("metric", f"The experiment has no metric {metric!r}.")
    if definition.binomial and value not in (0, 1):
        raise rules.invalid("value", "A conversion is 0 or 1.")
    assignment = Assignment.objects.filter(experiment=experiment, unit_id=unit_id).first()
    if assignment is None:
        raise ApplicationError(
            "This unit is not in the experiment: assign it first.",
            code="not_assigned",
            details={"user_id": ["Not assigned in this experiment."]},
        )
    event = MetricEvent.objects.create(
        experiment=experiment,
        variant_id=assignment.variant_id,
        assignment=assignment,
        metric=metric,
        value=float(value),
        source=MetricEvent.Source.CLIENT,
    )
    if definition.guardrail:
        _guardrails_check_soon(experiment.pk, experiment.guardrails_checked_at)
    return event


# --- the conversation turn -------------------------------------------------------------------
@dataclass(frozen=True)
class TurnAssignment:
    """One experiment a reply is written under: its variant and what it records."""

    experiment_id: uuid.UUID
    key: str
    variant_id: int
    variant: str
    assignment_id: int
    configuration: dict[str, Any]
    metrics: tuple[tuple[str, str], ...] = ()  # (name, type)
    guardrails: bool = False
    guardrails_checked_at: dt.datetime | None = None

    def describe(self) -> dict[str, Any]:
        """Stored on the reply (its metadata), shown by the API and the admin."""
        return {"id": str(self.experiment_id), "key": self.key, "variant": self.variant}


def _covering(*, user: User, agent_id: Any, workflow: str) -> list[Experiment]:
    # Staff's experiments cover every user; a user's own, only their own conversations.
    scope = Q(agent_id=agent_id) if agent_id else Q(agent_id__isnull=True)
    live = Q(status=Status.RUNNING) | Q(
        status=Status.COMPLETED, promoted_to=Experiment.Promotion.DEFAULTS, winner__isnull=False
    )
    experiments = Experiment.objects.filter(
        live, scope, Q(owner__is_staff=True) | Q(owner_id=user.pk)
    )
    if workflow == "agent":  # an agent's turn runs the agent's workflow, never another
        experiments = experiments.exclude(type=Experiment.Type.WORKFLOW)
    return list(
        experiments.select_related("winner")
        .prefetch_related("variants", "metrics")
        .order_by("started_at", "id")
    )


def turn_attributes(user: User, agent_id: Any, workflow: str) -> dict[str, Any]:
    """What targeting rules see of a turn's unit (the conversation's owner)."""
    return {
        "user_id": str(user.pk),
        "username": user.username,
        "is_staff": bool(user.is_staff),
        "agent_id": str(agent_id) if agent_id else None,
        "workflow": workflow,
    }


def turn_overrides(
    *, user: User, agent_id: Any, workflow: str, message_id: Any
) -> tuple[dict[str, Any], list[TurnAssignment]]:
    """The configuration of one reply in a conversation of ``user`` (its owner) with the
    agent ``agent_id`` (None: no agent): the winners promoted to defaults, then the variant
    of each running experiment that covers it, sticky by user. Two running experiments
    that change the same setting are exclusive: a user is in the first (by start) only.
    The reply ``message_id`` is recorded as exposed to each variant."""
    try:
        return _turn_overrides(
            user=user, agent_id=agent_id, workflow=workflow, message_id=message_id
        )
    except Exception:  # an experiment must never cost a reply: it answers unchanged
        logger.exception("experiments: the turn's overrides failed; the reply is unchanged")
        return {}, []


def _turn_overrides(
    *, user: User, agent_id: Any, workflow: str, message_id: Any
) -> tuple[dict[str, Any], list[TurnAssignment]]:
    experiments = _covering(user=user, agent_id=agent_id, workflow=workflow)
    if not experiments:
        return {}, []
    now = timezone.now()
    unit_id = str(user.pk)
    overrides: dict[str, Any] = {}
    for experiment in experiments:
        if experiment.status == Status.COMPLETED and experiment.winner is not None:
            overrides.update(experiment.winner.configuration)
    running = [e for e in experiments if e.status == Status.RUNNING and in_window(e, now)]
    if not running:
        return overrides, []
    stored = {
        a.experiment_id: a
        for a in Assignment.objects.filter(experiment__in=running, unit_id=unit_id)
    }
    attributes = turn_attributes(user, agent_id, workflow)
    claimed: set[str] = set()
    chosen: list[tuple[Experiment, Variant]] = []
    new: list[Assignment] = []
    for experiment in running:
        variants = list(experiment.variants.all())
        keys = set(rules.CONFIGURATION_KEYS.get(experiment.type, ()))
        if keys & claimed or not variants:
            continue
        assignment = stored.get(experiment.pk)
        if assignment is not None:
            variant = next(v for v in variants if v.pk == assignment.variant_id)
        elif _eligibility(experiment, unit_id, attributes, now) == "assigned":
            variant = variant_for(experiment, variants, unit_id)
            new.append(
                Assignment(
                    experiment=experiment,
                    variant=variant,
                    unit_id=unit_id,
                    attributes=attributes,
                    source=Assignment.Source.TURN,
                )
            )
        else:
            continue
        claimed |= keys
        chosen.append((experiment, variant))
    if new:
        # A concurrent turn of the same user may have stored it first: the same variant
        # (the hash decides), its row.
        Assignment.objects.bulk_create(new, ignore_conflicts=True)
        stored.update(
            {
                a.experiment_id: a
                for a in Assignment.objects.filter(
                    experiment__in=[a.experiment for a in new], unit_id=unit_id
                )
            }
        )
    assignments: list[TurnAssignment] = []
    for experiment, variant in chosen:
        assignment = stored[experiment.pk]
        if assignment.variant_id != variant.pk:  # stored by a concurrent turn: it holds
            variant = next(v for v in experiment.variants.all() if v.pk == assignment.variant_id)
        overrides.update(variant.configuration)
        metrics = list(experiment.metrics.all())
        assignments.append(
            TurnAssignment(
                experiment_id=experiment.pk,
                key=experiment.key,
                variant_id=variant.pk,
                variant=variant.name,
                assignment_id=assignment.pk,
                configuration=dict(variant.configuration),
                metrics=tuple((m.name, m.type) for m in metrics),
                guardrails=any(m.guardrail for m in metrics),
                guardrails_checked_at=experiment.guardrails_checked_at,
            )
        )
    if message_id is not None and assignments:
        Exposure.objects.bulk_create(
            [
                Exposure(
                    message_id=message_id,
                    experiment_id=a.experiment_id,
                    variant_id=a.variant_id,
                    assignment_id=a.assignment_id,
                    configuration=a.configuration,
                )
                for a in assignments
            ],
            ignore_conflicts=True,
        )
    return overrides, assignments


def turn_overrides_for_reply(*, message_id: Any) -> tuple[dict[str, Any], list[TurnAssignment]]:
    """A reply resumed later (after a tool approval) keeps the variants it began under."""
    exposures = (
        Exposure.objects.filter(message_id=message_id)
        .select_related("experiment", "variant")
        .prefetch_related("experiment__metrics")
        .order_by("id")
    )
    overrides: dict[str, Any] = {}
    assignments = []
    for exposure in exposures:
        overrides.update(exposure.configuration)
        metrics = list(exposure.experiment.metrics.all())
        assignments.append(
            TurnAssignment(
                experiment_id=exposure.experiment_id,
                key=exposure.experiment.key,
                variant_id=exposure.variant_id,
                variant=exposure.variant.name,
                assignment_id=exposure.assignment_id,
                configuration=dict(exposure.configuration),
                metrics=tuple((m.name, m.type) for m in metrics),
                guardrails=any(m.guardrail for m in metrics),
                guardrails_checked_at=exposure.experiment.guardrails_checked_at,
            )
        )
    return overrides, assignments


def _turn_value(
    kind: str,
    *,
    latency_ms: int | None,
    tokens_in: int,
    tokens_out: int,
    cost: Decimal | None,
    error: str,
) -> float | None:
    """The event a reply records for a metric of this type (None: nothing to record)."""
    if kind == Metric.Type.ERROR_RATE:
        return 1.0 if error else 0.0
    if kind == Metric.Type.ENGAGEMENT:
        return 1.0
    if error:  # a failed reply's latency and usage describe the failure, not the variant
        return None
    if kind == Metric.Type.RESPONSE_TIME:
        return None if latency_ms is None else float(latency_ms)
    if kind == Metric.Type.TOKEN_USAGE:
        return float(tokens_in + tokens_out)
    if kind == Metric.Type.COST:
        return None if cost is None else float(cost)
    return None


def turn_metrics_record(
    *,
    assignments: Iterable[TurnAssignment],
    message_id: Any,
    latency_ms: int | None,
    tokens_in: int,
    tokens_out: int,
    cost: Decimal | None,
    error: str = "",
) -> int:
    """A finished reply's measurements as metric events, for each experiment it was
    written under and each of its metrics the turn measures: response_time (ms),
    token_usage (in + out), cost, error_rate (0/1), engagement (1 per reply). Returns
    the events stored."""
    try:
        return _turn_metrics_record(
            assignments=list(assignments),
            message_id=message_id,
            values={
                "latency_ms": latency_ms,
                "tokens_in": tokens_in,
                "tokens_out": tokens_out,
                "cost": cost,
                "error": error,
            },
        )
    except Exception:  # the reply is stored; its measurements are not worth failing it
        logger.exception("experiments: the reply's metric events were not recorded")
        return 0


def _turn_metrics_record(
    *, assignments: list[TurnAssignment], message_id: Any, values: dict[str, Any]
) -> int:
    events = []
    for assignment in assignments:
        for name, kind in assignment.metrics:
            value = _turn_value(kind, **values)
            if value is not None:
                events.append(
                    MetricEvent(
                        experiment_id=assignment.experiment_id,
                        variant_id=assignment.variant_id,
                        assignment_id=assignment.assignment_id,
                        metric=name,
                        value=value,
                        source=MetricEvent.Source.TURN,
                        message_id=message_id,
                    )
                )
    if events:
        MetricEvent.objects.bulk_create(events, ignore_conflicts=True)
    for assignment in assignments:
        if assignment.guardrails:
            _guardrails_check_soon(assignment.experiment_id, assignment.guardrails_checked_at)
    return len(events)


def feedback_value(*, scale: str, rating: int) -> float:
    """A rating on [0, 1]: thumbs -1/0/1 -> 0/0.5/1, stars 1-5 -> 0-1."""
    if scale == "stars":
        return (rating - 1) / 4
    return (rating + 1) / 2


def turn_feedback_record(*, message_id: Any, scale: str, rating: int) -> int:
    """A rating of a reply, for each running or paused experiment whose variant wrote it,
    as its user_satisfaction metrics' event (a new rating replaces the last)."""
    exposures = list(
        Exposure.objects.filter(
            message_id=message_id, experiment__status__in=(Status.RUNNING, Status.PAUSED)
        ).prefetch_related("experiment__metrics")
    )
    value = feedback_value(scale=scale, rating=rating)
    recorded = 0
    for exposure in exposures:
        for metric in exposure.experiment.metrics.all():
            if metric.type != Metric.Type.USER_SATISFACTION:
                continue
            MetricEvent.objects.update_or_create(
                experiment_id=exposure.experiment_id,
                metric=metric.name,
                message_id=message_id,
                defaults={
                    "value": value,
                    "variant_id": exposure.variant_id,
                    "assignment_id": exposure.assignment_id,
                    "source": MetricEvent.Source.FEEDBACK,
                },
            )
            recorded += 1
            if metric.guardrail:
                _guardrails_check_soon(
                    exposure.experiment_id, exposure.experiment.guardrails_checked_at
                )
    return recorded


# --- guardrails ------------------------------------------------------------------------------
def _guardrails_check_soon(experiment_id: Any, checked_at: dt.datetime | None) -> None:
    """Queue a guardrail check, at most once a minute per experiment: the conditional
    UPDATE lets one caller of many win the minute."""
    now = timezone.now()
    if checked_at is not None and now - checked_at < GUARDRAIL_CHECK_INTERVAL:
        return
    claimed = Experiment.objects.filter(
        Q(guardrails_checked_at__isnull=True)
        | Q(guardrails_checked_at__lt=now - GUARDRAIL_CHECK_INTERVAL),
        pk=experiment_id,
        status=Status.RUNNING,
    ).update(guardrails_checked_at=now)
    if claimed:
        enqueue(
            GUARDRAILS_HANDLER,
            args={"experiment_id": str(experiment_id)},
            dedupe_key=f"experiment-guardrails:{experiment_id}",
        )


@dataclass
class GuardrailBreach:
    metric: str
    variant: str
    lift: float
    sequential_low: float
    sequential_high: float
    threshold: float
    details: dict[str, Any] = field(default_factory=dict)


def guardrail_breaches(results: dict[str, Any]) -> list[GuardrailBreach]:
    """The guardrail metrics of ``results`` a variant degrades past their threshold: the
    relative change in the bad direction exceeds it and the sequential (always-valid)
    interval excludes no change, so checking after every event is safe."""
    breaches = []
    for metric in results["metrics"]:
        if metric["role"] != "guardrail":
            continue
        worse_up = metric["direction"] == Metric.Direction.DECREASE
        for row in metric["variants"]:
            if row["is_control"] or row["lift"] is None:
                continue
            degraded = row["lift"] if worse_up else -row["lift"]
            bound = row["sequential_ci_low"] if worse_up else -row["sequential_ci_high"]
            if degraded > metric["guardrail_threshold"] and bound > 0:
                breaches.append(
                    GuardrailBreach(
                        metric=metric["name"],
                        variant=row["variant"],
                        lift=row["lift"],
                        sequential_low=row["sequential_ci_low"],
                        sequential_high=row["sequential_ci_high"],
                        threshold=metric["guardrail_threshold"],
                        details={"count": row["count"], "mean": row["mean"]},
                    )
                )
    return breaches


def experiment_guardrails_check(*, experiment: Experiment) -> list[ExperimentAlert]:
    """Pause a running experiment whose guardrail a variant degrades, with an alert per
    breach (stored, logged as a warning, in the audit log)."""
    if experiment.status != Status.RUNNING:
        return []
    breaches = guardrail_breaches(experiment_results(experiment=experiment))
    if not breaches:
        return []
    alerts = []
    with transaction.atomic():
        try:
            experiment_pause(
                experiment=experiment,
                actor=None,
                reason="guardrail: " + ", ".join(f"{b.metric} ({b.variant})" for b in breaches),
            )
        except Conflict:
            return []  # paused or ended meanwhile: nothing to stop
        for breach in breaches:
            message = (
                f"Experiment {experiment.key!r} paused: variant {breach.variant!r} degrades "
                f"guardrail {breach.metric!r} by {abs(breach.lift):.1%} (threshold "
                f"{breach.threshold:.1%}; always-valid interval {breach.sequential_low:+.1%} "
                f"to {breach.sequential_high:+.1%})."
            )
            alerts.append(
                ExperimentAlert.objects.create(
                    experiment=experiment,
                    kind=ExperimentAlert.Kind.GUARDRAIL,
                    metric=breach.metric,
                    variant=breach.variant,
                    message=message,
                    details={
                        "lift": breach.lift,
                        "sequential_ci_low": breach.sequential_low,
                        "sequential_ci_high": breach.sequential_high,
                        "threshold": breach.threshold,
                        **breach.details,
                    },
                )
            )
            logger.warning(message)
    return alerts


def experiments_guardrails_check() -> dict[str, int]:
    """Check every running experiment that has a guardrail (the maintenance step)."""
    running = Experiment.objects.filter(status=Status.RUNNING, metrics__guardrail=True).distinct()
    paused = 0
    for experiment in running:
        if experiment_guardrails_check(experiment=experiment):
            paused += 1
    return {"checked": len(running), "paused": paused}
