"""Reads: the agents a user may see and use, prompt history, variants' measured reward."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from django.db.models import Q, QuerySet, Sum

from accounts.models import User
from agents.models import Agent, AgentPromptVersion, AgentVariant, AgentVariantChoice
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
