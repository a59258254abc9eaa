"""The interface the conversation turn calls (conversations sits above experiments):
``turn_overrides`` (the running experiments that cover a reply, and its variants'
configuration), ``turn_metrics_record`` (the reply's latency, tokens, cost and error as
metric events) and ``turn_feedback_record`` (a rating of the reply as an event)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import connection
from django.utils import timezone
from psycopg.types.json import Jsonb

from accounts.models import User
from experiments import rules
from experiments.assignment import in_window, variant_for
from experiments.models import (
    Assignment,
    Experiment,
    Exposure,
    Metric,
    MetricEvent,
    Variant,
)
from experiments.services.guardrails import guardrails_check_soon
from experiments.services.units import eligibility

logger = logging.getLogger("chatter.experiments")

Status = Experiment.Status


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


# Every experiment that may cover a turn, with its variants, its metrics and the unit's
# stored assignment, in one statement: the turn's hot path (an ORM query with two
# prefetches costs three round trips and milliseconds of SQL compilation). Staff's
# experiments cover every user; a user's own, only their own conversations.
_COVERING_SQL = """
SELECT e.id, e.key, e.type, e.status, e.allocation, e.traffic_percentage, e.ramp_schedule,
       e.targeting, e.start_at, e.end_at, e.started_at, e.guardrails_checked_at, e.winner_id,
       (SELECT coalesce(json_agg(json_build_array(v.id, v.name, v.is_control, v.weight,
                                                  v.configuration) ORDER BY v.position, v.id),
                        '[]')
        FROM {variant} v WHERE v.experiment_id = e.id),
       (SELECT coalesce(json_agg(json_build_array(m.name, m.type, m.guardrail)
                                 ORDER BY m.position, m.id), '[]')
        FROM {metric} m WHERE m.experiment_id = e.id),
       a.id, a.variant_id
FROM {experiment} e
JOIN {user} o ON o.id = e.owner_id
LEFT JOIN {assignment} a ON a.experiment_id = e.id AND a.unit_id = %(unit)s
WHERE (e.status = 'running'
       OR (e.status = 'completed' AND e.promoted_to = 'defaults' AND e.winner_id IS NOT NULL))
  AND e.agent_id IS NOT DISTINCT FROM %(agent)s::uuid
  AND (o.is_staff OR e.owner_id = %(user)s)
  AND (%(workflow)s <> 'agent' OR e.type <> 'workflow')
ORDER BY e.started_at, e.id
"""


@dataclass
class _Covering:
    experiment: Experiment  # not saved: the fields assignment reads
    variants: list[Variant]
    metrics: list[tuple[str, str, bool]]  # (name, type, guardrail)
    assignment_id: int | None
    assigned_variant_id: int | None


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _covering(*, user: User, agent_id: Any, workflow: str) -> list[_Covering]:
    sql = _COVERING_SQL.format(
        experiment=Experiment._meta.db_table,
        variant=Variant._meta.db_table,
        metric=Metric._meta.db_table,
        assignment=Assignment._meta.db_table,
        user=User._meta.db_table,
    )
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            {
                "unit": str(user.pk),
                "agent": str(agent_id) if agent_id else None,
                "user": user.pk,
                "workflow": workflow,
            },
        )
        rows = cursor.fetchall()
    found = []
    for row in rows:
        (pk, key, kind, status, allocation, traffic, ramp, targeting, start_at, end_at) = row[:10]
        (started_at, checked_at, winner_id, variants, metrics, assignment_id, assigned) = row[10:]
        experiment = Experiment(
            id=pk,
            key=key,
            type=kind,
            status=status,
            allocation=allocation,
            traffic_percentage=traffic,
            ramp_schedule=_json(ramp),
            targeting=_json(targeting),
            start_at=start_at,
            end_at=end_at,
            started_at=started_at,
            guardrails_checked_at=checked_at,
            winner_id=winner_id,
        )
        found.append(
            _Covering(
                experiment=experiment,
                variants=[
                    Variant(
                        id=v[0],
                        experiment_id=pk,
                        name=v[1],
                        is_control=v[2],
                        weight=v[3],
                        configuration=v[4],
                    )
                    for v in _json(variants)
                ],
                metrics=[(m[0], m[1], m[2]) for m in _json(metrics)],
                assignment_id=assignment_id,
                assigned_variant_id=assigned,
            )
        )
    return found


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
    covering = _covering(user=user, agent_id=agent_id, workflow=workflow)
    if not covering:
        return {}, []
    now = timezone.now()
    unit_id = str(user.pk)
    overrides: dict[str, Any] = {}
    for entry in covering:
        if entry.experiment.status == Status.COMPLETED:
            winner = next(v for v in entry.variants if v.pk == entry.experiment.winner_id)
            overrides.update(winner.configuration)
    running = [
        c
        for c in covering
        if c.experiment.status == Status.RUNNING and in_window(c.experiment, now)
    ]
    attributes = turn_attributes(user, agent_id, workflow)
    claimed: set[str] = set()
    chosen: list[tuple[_Covering, Variant]] = []
    for entry in running:
        experiment = entry.experiment
        keys = set(rules.CONFIGURATION_KEYS.get(experiment.type, ()))
        if keys & claimed or not entry.variants:
            continue
        if entry.assigned_variant_id is not None:
            variant = next(v for v in entry.variants if v.pk == entry.assigned_variant_id)
        elif eligibility(experiment, unit_id, attributes, now) == "assigned":
            variant = variant_for(experiment, entry.variants, unit_id)
        else:
            continue
        claimed |= keys
        chosen.append((entry, variant))
    new = [(entry, variant) for entry, variant in chosen if entry.assignment_id is None]
    if new:
        # A concurrent turn of the same user may store it first: the same variant (the hash
        # decides), and its row is the one read back.
        Assignment.objects.bulk_create(
            [
                Assignment(
                    experiment_id=entry.experiment.pk,
                    variant_id=variant.pk,
                    unit_id=unit_id,
                    attributes=attributes,
                    source=Assignment.Source.TURN,
                )
                for entry, variant in new
            ],
            ignore_conflicts=True,
        )
        stored = {
            a.experiment_id: a
            for a in Assignment.objects.filter(
                experiment_id__in=[entry.experiment.pk for entry, _ in new], unit_id=unit_id
            )
        }
        for entry, _ in new:
            entry.assignment_id = stored[entry.experiment.pk].pk
            entry.assigned_variant_id = stored[entry.experiment.pk].variant_id
    assignments: list[TurnAssignment] = []
    for entry, variant in chosen:
        if entry.assigned_variant_id != variant.pk:  # stored by a concurrent turn: it holds
            variant = next(v for v in entry.variants if v.pk == entry.assigned_variant_id)
        overrides.update(variant.configuration)
        assignments.append(
            TurnAssignment(
                experiment_id=entry.experiment.pk,
                key=entry.experiment.key,
                variant_id=variant.pk,
                variant=variant.name,
                assignment_id=entry.assignment_id,  # type: ignore[arg-type]
                configuration=dict(variant.configuration),
                metrics=tuple((name, kind) for name, kind, _ in entry.metrics),
                guardrails=any(guardrail for _, _, guardrail in entry.metrics),
                guardrails_checked_at=entry.experiment.guardrails_checked_at,
            )
        )
    if message_id is not None and assignments:
        _insert_unflushed(
            Exposure,
            ["message_id", "experiment_id", "variant_id", "assignment_id", "configuration"],
            [
                (message_id, a.experiment_id, a.variant_id, a.assignment_id, Jsonb(a.configuration))
                for a in assignments
            ],
        )
    return overrides, assignments


def _insert_unflushed(model: Any, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING in one statement that does not wait for the WAL
    flush (a synchronous commit costs a flush per turn). An exposure is flushed by the turn's
    last statement, a synchronous commit, so it is as durable as the reply; the reply's
    metric events, written after it, by the WAL writer within wal_writer_delay (200 ms): a
    database crash in that window may lose the last measurements, never a reply. Inside a
    caller's transaction the commit is the caller's, left as it is."""
    types = [model._meta.get_field(name).db_type(connection) for name in columns]
    row = "(" + ", ".join(f"%s::{kind}" for kind in types) + ")"
    names = ", ".join(columns)
    unflushed = not connection.in_atomic_block
    sql = (
        (
            "WITH unflushed AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true)) "
            if unflushed
            else ""
        )
        + f"INSERT INTO {model._meta.db_table} ({names}, created_at) "
        + f"SELECT {', '.join(f'v.{c}' for c in columns)}, now() "
        + f"FROM (VALUES {', '.join([row] * len(rows))}) AS v({names})"
        + (", unflushed" if unflushed else "")
        + " ON CONFLICT DO NOTHING"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [value for values in rows for value in values])


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
                    (
                        assignment.experiment_id,
                        assignment.variant_id,
                        assignment.assignment_id,
                        name,
                        value,
                        MetricEvent.Source.TURN.value,
                        message_id,
                    )
                )
    if events:
        _insert_unflushed(
            MetricEvent,
            [
                "experiment_id",
                "variant_id",
                "assignment_id",
                "metric",
                "value",
                "source",
                "message_id",
            ],
            events,
        )
    for assignment in assignments:
        if assignment.guardrails:
            guardrails_check_soon(assignment.experiment_id, assignment.guardrails_checked_at)
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
                guardrails_check_soon(
                    exposure.experiment_id, exposure.experiment.guardrails_checked_at
                )
    return recorded
