"""Reads: the agents a user may see and use, prompt history, variants' measured reward,
interactions and the metrics computed from them (in PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.db.models import (
    Aggregate,
    Avg,
    Case,
    Count,
    FloatField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce, TruncDate

from accounts.models import User
from agents.models import (
    Agent,
    AgentInteraction,
    AgentPromptVersion,
    AgentVariant,
    AgentVariantChoice,
)
from core.errors import NotFound

# Beta(1, 1): before any feedback an agent's performance is 0.5, neither good nor bad.
PRIOR_ALPHA = 1.0
PRIOR_BETA = 1.0


def agent_list(*, user: User) -> QuerySet[Agent]:
    """The user's own agents and the shared ones; staff see every agent."""
    agents = Agent.objects.select_related("owner")
    if user.is_staff:
        return agents.all()
    return agents.filter(Q(owner=user) | Q(owner__isnull=True))


def agent_get(*, user: User, agent_id: UUID | str) -> Agent:
    agent = agent_list(user=user).filter(pk=agent_id).first()
    if agent is None:
        raise NotFound("Not found.")
    return agent


def agent_usable(*, user: User, agent_type: str | None = None) -> QuerySet[Agent]:
    """The active agents the user may talk to: their own and the shared ones (staff too:
    routing never hands a user someone else's private agent)."""
    agents = Agent.objects.filter(Q(owner=user) | Q(owner__isnull=True), status=Agent.Status.ACTIVE)
    if agent_type:
        agents = agents.filter(type=agent_type)
    return agents.order_by("name", "id")


def agent_prompt_history(*, agent: Agent) -> QuerySet[AgentPromptVersion]:
    return agent.prompt_versions.select_related("author").order_by("-version")


def variant_list(*, agent: Agent) -> QuerySet[AgentVariant]:
    return agent.variants.order_by("name")


def variant_choice_list(*, agent: Agent) -> QuerySet[AgentVariantChoice]:
    return agent.variant_choices.select_related("variant").order_by("-created_at", "-id")


@dataclass(frozen=True)
class Performance:
    """An agent's measured reward: the posterior mean of Beta(prior + rewards), pooled over
    its variants' feedback; 0.5 (the prior's mean) with no feedback."""

    mean: float
    feedback: int


def agent_performance(*, agent_ids: list[UUID]) -> dict[UUID, Performance]:
    rows = (
        AgentVariant.objects.filter(agent_id__in=agent_ids)
        .values("agent_id")
        .annotate(rewards=Sum("reward_sum"), feedback=Sum("feedback_count"))
    )
    prior = PRIOR_ALPHA / (PRIOR_ALPHA + PRIOR_BETA)
    result = {agent_id: Performance(prior, 0) for agent_id in agent_ids}
    for row in rows:
        rewards, feedback = row["rewards"] or 0.0, row["feedback"] or 0
        mean = (PRIOR_ALPHA + rewards) / (PRIOR_ALPHA + PRIOR_BETA + feedback)
        result[row["agent_id"]] = Performance(mean, feedback)
    return result


# --- interactions and metrics ------------------------------------------------------------------
def agent_may_edit(*, agent: Agent, user: User) -> bool:
    """Staff, and the owner of a private agent: who changes it and reads all its records."""
    return bool(user.is_staff or (agent.owner_id is not None and agent.owner_id == user.pk))


def interaction_list(*, agent: Agent, user: User) -> QuerySet[AgentInteraction]:
    """The agent's replies, newest first: every one for its editors (owner, staff); a user
    of a shared agent sees only the replies given to them."""
    rows = agent.interactions.select_related("variant").order_by("-created_at", "-id")
    if agent_may_edit(agent=agent, user=user):
        return rows
    return rows.filter(user=user)


class PercentileCont(Aggregate):
    """PostgreSQL's ``percentile_cont(f) WITHIN GROUP (ORDER BY expr)``: the interpolated
    f-quantile of the non-null values."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, fraction: float, expression: Any, **extra: Any) -> None:
        fraction = float(fraction)
        if not 0 <= fraction <= 1:
            raise ValueError("a percentile is from 0 to 1")
        super().__init__(expression, fraction=repr(fraction), **extra)


def _metric_aggregates() -> dict[str, Any]:
    return {
        "replies": Count("id"),
        "errors": Count("id", filter=~Q(error="")),
        "latency_p50": PercentileCont(0.5, "latency_ms"),
        "latency_p95": PercentileCont(0.95, "latency_ms"),
        "latency_mean": Avg("latency_ms"),
        "latency_count": Count("latency_ms"),
        "tokens_in_mean": Avg("tokens_in"),
        "tokens_out_mean": Avg("tokens_out"),
        "feedback_count": Count("feedback_reward"),
        "feedback_mean": Avg("feedback_reward"),
        "with_tool_calls": Count("id", filter=Q(tool_call_count__gt=0)),
        "tool_calls_mean": Avg("tool_call_count"),
        "confidence_count": Count("confidence"),
        "confidence_mean": Avg("confidence"),
    }


def _metric_block(row: dict[str, Any]) -> dict[str, Any]:
    replies = row.get("replies") or 0

    def share(count: int) -> float | None:
        return count / replies if replies else None

    tokens_in, tokens_out = row.get("tokens_in_mean"), row.get("tokens_out_mean")
    return {
        "replies": replies,
        "errors": row.get("errors") or 0,
        "error_rate": share(row.get("errors") or 0),
        "latency_ms": {
            "p50": row.get("latency_p50"),
            "p95": row.get("latency_p95"),
            "mean": row.get("latency_mean"),
            "measured": row.get("latency_count") or 0,
        },
        "tokens": {
            "mean_in": tokens_in,
            "mean_out": tokens_out,
            "mean_total": None if tokens_in is None else tokens_in + (tokens_out or 0),
        },
        "feedback": {"count": row.get("feedback_count") or 0, "mean": row.get("feedback_mean")},
        "tool_calls": {
            "replies_with_calls": row.get("with_tool_calls") or 0,
            "rate": share(row.get("with_tool_calls") or 0),
            "mean_per_reply": row.get("tool_calls_mean"),
        },
        "confidence": {
            "count": row.get("confidence_count") or 0,
            "mean": row.get("confidence_mean"),
        },
    }


def agent_metrics(*, agent: Agent, since: dt.datetime, until: dt.datetime) -> dict[str, Any]:
    """What the agent's replies created in [since, until) measured: every figure is an
    aggregate over AgentInteraction rows, computed by PostgreSQL (percentiles with
    percentile_cont); rates and means are None when nothing was measured. Feedback counts
    the ratings those replies have now, whenever they were given."""
    rows = AgentInteraction.objects.filter(agent=agent, created_at__gte=since, created_at__lt=until)
    aggregates = _metric_aggregates()
    total = rows.aggregate(**aggregates)
    models = [
        {"model": row["model_used"], "replies": row["replies"]}
        for row in rows.values("model_used")
        .annotate(replies=Count("id"))
        .order_by("-replies", "model_used")
    ]
    by_variant = {
        row["variant_id"]: row
        for row in rows.filter(variant__isnull=False)
        .values("variant_id")
        .annotate(**aggregates)
        .order_by()
    }
    variants = [
        {
            "id": variant.pk,
            "name": variant.name,
            "active": variant.active,
            "alpha": variant.alpha,
            "beta": variant.beta,
            "posterior_mean": variant.posterior_mean,
            **_metric_block(by_variant.get(variant.pk, {})),
        }
        for variant in agent.variants.order_by("name")
    ]
    return {
        "since": since,
        "until": until,
        **_metric_block(total),
        "models": models,
        "variants": variants,
    }


@dataclass(frozen=True)
class FeedbackDay:
    day: dt.date
    variant: str | None  # None: replies that came from no variant
    count: int
    mean: float


def agent_feedback_daily(*, agent: Agent, since: dt.datetime) -> list[FeedbackDay]:
    """Mean reward and rating count per UTC day of rating and per variant, since ``since``."""
    rows = (
        AgentInteraction.objects.filter(
            agent=agent, feedback_reward__isnull=False, feedback_at__gte=since
        )
        .annotate(day=TruncDate("feedback_at", tzinfo=dt.UTC))
        .values("day", "variant__name")
        .annotate(count=Count("id"), mean=Avg("feedback_reward"))
        .order_by("day", "variant__name")
    )
    return [FeedbackDay(r["day"], r["variant__name"], r["count"], r["mean"]) for r in rows]


def _per_agent(aggregate: Any) -> Subquery:
    return Subquery(
        AgentInteraction.objects.filter(agent=OuterRef("pk"))
        .order_by()
        .values("agent")
        .annotate(value=aggregate)
        .values("value")
    )


def agents_with_metrics(agents: QuerySet[Agent]) -> QuerySet[Agent]:
    """``agents`` annotated with all-time reply metrics, in the same query (one correlated
    subquery per column): _replies, _latency_mean, _feedback_mean, _tool_call_rate."""
    return agents.annotate(
        _replies=Coalesce(_per_agent(Count("id")), 0),
        _latency_mean=_per_agent(Avg("latency_ms")),
        _feedback_mean=_per_agent(Avg("feedback_reward")),
        _tool_call_rate=_per_agent(
            Avg(
                Case(
                    When(tool_call_count__gt=0, then=Value(1.0)),
                    default=Value(0.0),
                    output_field=FloatField(),
                )
            )
        ),
    )
