"""What an agent answers with in one reply: its settings with the chosen variant's overrides
applied, and its tools built for the user who asks (the registry's ToolContext carries the
agent, so knowledge_search stays inside the agent's knowledge scope and the user's
documents). Read by the conversation turn and the OpenAI-compatible API alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agents.models import Agent, AgentVariantChoice
from agents.selectors import agent_usable
from agents.tools.registry import ToolContext, tool_get
from core.errors import NotFound

if TYPE_CHECKING:
    from langchain_core.tools import BaseTool

    from accounts.models import User


@dataclass(frozen=True)
class AgentSettings:
    """One reply's agent settings: the agent's, with the variant's overrides applied."""

    agent: Agent
    choice: AgentVariantChoice | None
    model: str
    fallback_model: str
    temperature: float | None
    max_tokens: int | None
    system_prompt: str
    tools: list[BaseTool] = field(default_factory=list)
    approval_tools: frozenset[str] = frozenset()

    def describe(self) -> dict[str, Any]:
        """Which agent and variant answer: stored on the reply, shown by the API and admin."""
        variant = self.choice.variant if self.choice is not None else None
        return {
            "agent": {"id": str(self.agent.pk), "slug": self.agent.slug, "name": self.agent.name},
            "variant": None
            if variant is None
            else {"id": str(variant.pk), "name": variant.name, "choice_id": self.choice.pk},  # type: ignore[union-attr]
        }


def agent_settings(
    *, agent: Agent, user: User, choice: AgentVariantChoice | None, default_model: str
) -> AgentSettings:
    """The agent's settings for a reply to ``user``, ``choice``'s variant applied (its
    prompt when it has one, its model/temperature/max_tokens overrides), with the agent's
    tools built for ``user``."""
    variant = choice.variant if choice is not None else None
    overrides: dict[str, Any] = dict(variant.parameters) if variant is not None else {}
    context = ToolContext(user=user, agent=agent)
    specs = [tool_get(name) for name in agent.tools]
    return AgentSettings(
        agent=agent,
        choice=choice,
        model=overrides.get("model") or agent.model or default_model,
        fallback_model=agent.fallback_model,
        temperature=overrides.get("temperature", agent.temperature),
        max_tokens=overrides.get("max_tokens", agent.max_tokens),
        system_prompt=(variant.system_prompt if variant and variant.system_prompt else "")
        or agent.system_prompt,
        tools=[spec.factory(context) for spec in specs],
        approval_tools=frozenset(spec.name for spec in specs if spec.requires_approval),
    )


def agent_resolve(*, user: User, ref: str) -> Agent:
    """The active agent ``ref`` names (its id, or its slug; the user's own agent before a
    shared one of the same slug) among those ``user`` may use. Another user's private
    agent is as unknown as one that does not exist, except to staff, who may talk to any
    active agent by its id (the operator console's chat: operators see and edit every agent
    already). Its tools still work for who asks: knowledge_search reads the operator's
    documents, never the agent owner's. Routing ("auto") offers nobody another's agent."""
    agents = agent_usable(user=user)
    agent = None
    try:
        import uuid

        by_id = Agent.objects.filter(status=Agent.Status.ACTIVE) if user.is_staff else agents
        agent = by_id.filter(pk=uuid.UUID(str(ref))).first()
    except ValueError:
        pass
    if agent is None:
        # Own first: NULL owners sort last in PostgreSQL's ascending order.
        agent = agents.filter(slug=ref).order_by("owner_id").first()
    if agent is None:
        # 404, as for any id of someone else's: the agent may exist, but not for this user.
        raise NotFound(
            "No agent you may use has this id or slug.",
            code="unknown_agent",
            details={"agent": ["An active agent's id or slug (yours or a shared one), or auto."]},
        )
    return agent
