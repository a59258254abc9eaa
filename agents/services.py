"""Writes: agents (with their prompt history), variants, Thompson-sampling choices and
their feedback, and routing a message to an agent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import User
from accounts.services import log_action
from agents.confidence import reply_confidence
from agents.events import agent_event_emit
from agents.models import (
    Agent,
    AgentInteraction,
    AgentPromptVersion,
    AgentVariant,
    AgentVariantChoice,
)
from agents.selectors import Performance, agent_performance, agent_usable
from agents.specs import validate_model_spec
from agents.tools import tool_get
from agents.types import agent_types
from core.errors import ApplicationError, Conflict, Forbidden
from knowledge.filters import metadata_filter_sql

EDITABLE_FIELDS = (
    "name",
    "slug",
    "type",
    "description",
    "system_prompt",
    "model",
    "temperature",
    "max_tokens",
    "fallback_model",
    "capabilities",
    "tools",
    "knowledge_filter",
    "status",
)
MAX_CAPABILITIES = 50
MAX_TOOLS = 50


def _invalid(field: str, message: str, code: str = "validation_error") -> ApplicationError:
    return ApplicationError("Invalid input.", code=code, details={field: [message]})


def _check_type(value: Any) -> None:
    if value not in agent_types():
        raise _invalid("type", f"Use one of: {', '.join(sorted(agent_types()))}.")


def _check_capabilities(capabilities: Any) -> None:
    if not isinstance(capabilities, list) or not all(
        isinstance(item, dict)
        and set(item) == {"name", "description"}
        and isinstance(item["name"], str)
        and 0 < len(item["name"]) <= 100
        and isinstance(item["description"], str)
        and len(item["description"]) <= 2000
        for item in capabilities
    ):
        raise _invalid(
            "capabilities", "A list of {name, description} objects (text, name not empty)."
        )
    if len(capabilities) > MAX_CAPABILITIES:
        raise _invalid("capabilities", f"At most {MAX_CAPABILITIES} capabilities.")
    names = [item["name"] for item in capabilities]
    if len(set(names)) != len(names):
        raise _invalid("capabilities", "Capability names must be unique.")


def _check_tools(tools: Any) -> None:
    if not isinstance(tools, list) or not all(isinstance(name, str) for name in tools):
        raise _invalid("tools", "A list of tool names.")
    if len(tools) > MAX_TOOLS or len(set(tools)) != len(tools):
        raise _invalid("tools", f"At most {MAX_TOOLS} tools, each named once.")
    for name in tools:
        try:
            tool_get(name)
        except ApplicationError as exc:
            raise _invalid("tools", exc.message, code="unknown_tool") from exc


def _check_knowledge_filter(scope: Any) -> None:
    if not isinstance(scope, dict):
        raise _invalid("knowledge_filter", "A metadata filter object ({} for everything).")
    # The same grammar (and the same error) as knowledge search's metadata_filter.
    try:
        metadata_filter_sql(scope or None, "metadata")
    except ApplicationError as exc:
        problems = exc.details.get("metadata_filter", {}) if isinstance(exc.details, dict) else {}
        raise ApplicationError(
            exc.message, code=exc.code, details={"knowledge_filter": problems or [exc.message]}
        ) from exc


_CHECKS = {
    "type": _check_type,
    "model": lambda spec: validate_model_spec(spec, field="model"),
    "fallback_model": lambda spec: validate_model_spec(spec, field="fallback_model"),
    "capabilities": _check_capabilities,
    "tools": _check_tools,
    "knowledge_filter": _check_knowledge_filter,
}


def agent_validate(fields: dict[str, Any]) -> dict[str, Any]:
    """The domain rules of agent fields (type, models, capabilities, tools, knowledge scope);
    one ApplicationError naming every field that breaks one. The admin's form runs it too."""
    problems: dict[str, Any] = {}
    codes: list[str] = []
    for name, check in _CHECKS.items():
        if name in fields:
            try:
                check(fields[name])
            except ApplicationError as exc:
                codes.append(exc.code)
                details = exc.details if isinstance(exc.details, dict) else {}
                problems.update(details or {name: [exc.message]})
    if problems:
        code = codes[0] if len(codes) == 1 else "validation_error"
        raise ApplicationError("Invalid input.", code=code, details=problems)
    return fields


def _slug_taken(slug: str) -> ApplicationError:
    return Conflict(
        "An agent with this slug exists.",
        code="slug_taken",
        details={"slug": ["Already used by another of these agents."]},
    )


def _record_prompt(agent: Agent, author: User | None) -> AgentPromptVersion:
    last = agent.prompt_versions.order_by("-version").values_list("version", flat=True).first()
    return AgentPromptVersion.objects.create(
        agent=agent, version=(last or 0) + 1, system_prompt=agent.system_prompt, author=author
    )


def agent_create(*, actor: User, shared: bool = False, **fields: Any) -> Agent:
    """A new agent of ``actor`` (``shared``: staff only, an agent every user may use); its
    prompt is version 1 of its history."""
    if shared and not actor.is_staff:
        raise Forbidden("Only staff create shared agents.", details={"shared": ["Staff only."]})
    fields = agent_validate({k: v for k, v in fields.items() if k in EDITABLE_FIELDS})
    try:
        with transaction.atomic():
            agent = Agent.objects.create(
                owner=None if shared else actor, created_by=actor, **fields
            )
            _record_prompt(agent, actor)
            agent_event_emit("agent.created", agent)
    except IntegrityError as exc:
        raise _slug_taken(fields.get("slug", "")) from exc
    log_action(actor=actor, action="agent.create", target=agent, details={"slug": agent.slug})
    return agent


def _may_edit(agent: Agent, actor: User) -> None:
    if actor.is_staff or agent.owner_id == actor.pk:
        return
    raise Forbidden("Only staff change shared agents.")


def agent_update(*, agent: Agent, actor: User, **fields: Any) -> Agent:
    """Change an agent; a changed system prompt becomes a new version in its history."""
    _may_edit(agent, actor)
    fields = agent_validate({k: v for k, v in fields.items() if k in EDITABLE_FIELDS})
    prompt_changed = "system_prompt" in fields and fields["system_prompt"] != agent.system_prompt
    for name, value in fields.items():
        setattr(agent, name, value)
    try:
        with transaction.atomic():
            # Lock the row: two concurrent prompt edits must not both become version n+1.
            Agent.objects.select_for_update().filter(pk=agent.pk).first()
            agent.save()
            if prompt_changed:
                _record_prompt(agent, actor)
            agent_event_emit("agent.updated", agent, fields=sorted(fields))
    except IntegrityError as exc:
        raise _slug_taken(agent.slug) from exc
    log_action(actor=actor, action="agent.update", target=agent, details={"fields": sorted(fields)})
    return agent


def agent_delete(*, agent: Agent, actor: User) -> None:
    _may_edit(agent, actor)
    log_action(actor=actor, action="agent.delete", target=agent, details={"slug": agent.slug})
    agent.delete()


# --- variants and Thompson sampling ------------------------------------------------------------
VARIANT_PARAMETERS = {"model", "temperature", "max_tokens"}


def variant_parameters_validate(parameters: Any) -> dict[str, Any]:
    """A variant's overrides: ``model`` (a spec), ``temperature`` (0-2), ``max_tokens``."""
    if not isinstance(parameters, dict):
        raise _invalid("parameters", "An object of overrides: model, temperature, max_tokens.")
    unknown = sorted(set(parameters) - VARIANT_PARAMETERS)
    if unknown:
        raise _invalid("parameters", f"Unknown parameters: {', '.join(unknown)}.")
    if "model" in parameters:
        if not isinstance(parameters["model"], str):
            raise _invalid("parameters", "model is a provider:model string.")
        validate_model_spec(parameters["model"], field="parameters")
    temperature = parameters.get("temperature")
    if "temperature" in parameters and (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not 0 <= temperature <= 2
    ):
        raise _invalid("parameters", "temperature is a number from 0 to 2.")
    max_tokens = parameters.get("max_tokens")
    if "max_tokens" in parameters and (
        isinstance(max_tokens, bool)
        or not isinstance(max_tokens, int)
        or not 1 <= max_tokens <= 200_000
    ):
        raise _invalid("parameters", "max_tokens is an integer from 1 to 200000.")
    return parameters


def _may_edit_variants(agent: Agent, actor: User | None) -> None:
    # actor None: a caller with no user behind it (a test, a job); the API and admin pass one.
    if actor is None or actor.is_staff or agent.owner_id == actor.pk:
        return
    raise Forbidden("Only the agent's owner (staff, for a shared agent) changes its variants.")


def _check_variant_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        raise _invalid("name", "A name of 1 to 100 characters.")
    return name


def variant_update(
    *,
    variant: AgentVariant,
    system_prompt: str | None = None,
    parameters: dict[str, Any] | None = None,
    active: bool | None = None,
    actor: User | None = None,
) -> AgentVariant:
    """Change a variant's prompt, overrides or whether it is chosen (what is given); its
    name, posterior and history stay."""
    _may_edit_variants(variant.agent, actor)
    changed = []
    if system_prompt is not None:
        variant.system_prompt = system_prompt
        changed.append("system_prompt")
    if parameters is not None:
        variant.parameters = variant_parameters_validate(parameters)
        changed.append("parameters")
    if active is not None:
        variant.active = bool(active)
        changed.append("active")
    if changed:
        variant.save(update_fields=changed)
        log_action(
            actor=actor,
            action="agent.variant.update",
            target=variant,
            details={"agent": str(variant.agent_id), "fields": changed},
        )
    return variant


def variant_create(
    *,
    agent: Agent,
    name: str,
    system_prompt: str = "",
    parameters: dict[str, Any] | None = None,
    active: bool = True,
    actor: User | None = None,
) -> AgentVariant:
    """A variant of ``agent`` with a uniform Beta(1, 1) posterior."""
    _may_edit_variants(agent, actor)
    _check_variant_name(name)
    parameters = variant_parameters_validate(parameters or {})
    try:
        with transaction.atomic():
            variant = AgentVariant.objects.create(
                agent=agent,
                name=name,
                system_prompt=system_prompt,
                parameters=parameters,
                active=active,
            )
    except IntegrityError as exc:
        raise Conflict(
            "This agent has a variant of that name.", details={"name": ["Already used."]}
        ) from exc
    log_action(
        actor=actor,
        action="agent.variant.create",
        target=variant,
        details={"agent": str(agent.pk), "name": name},
    )
    return variant


def variant_delete(*, variant: AgentVariant, actor: User | None = None) -> None:
    """Delete a variant that was never chosen. One with choices keeps its record (its
    choices and their feedback are the learning history): deactivate it instead (409)."""
    _may_edit_variants(variant.agent, actor)
    if variant.choices.exists():
        raise Conflict(
            "This variant has been chosen; its choices and feedback are kept. "
            "Deactivate it instead (active: false).",
            code="variant_has_history",
        )
    log_action(
        actor=actor,
        action="agent.variant.delete",
        target=variant,
        details={"agent": str(variant.agent_id), "name": variant.name},
    )
    variant.delete()


def variant_choose(
    *, agent: Agent, user: User | None = None, rng: np.random.Generator | None = None
) -> AgentVariantChoice | None:
    """Thompson sampling: draw from each active variant's Beta posterior, pick the largest
    draw, and record the choice. None when the agent has no active variant. ``rng`` makes
    the draws reproducible (tests); by default numpy's generator seeded from the system."""
    variants = list(agent.variants.filter(active=True).order_by("name"))
    if not variants:
        return None
    generator = rng if rng is not None else np.random.default_rng()
    draws = generator.beta([v.alpha for v in variants], [v.beta for v in variants])
    best = int(np.argmax(draws))
    return AgentVariantChoice.objects.create(
        agent=agent,
        variant=variants[best],
        user=user,
        sample=float(draws[best]),
        samples={v.name: float(d) for v, d in zip(variants, draws, strict=True)},
    )


def reward_from_feedback(*, scale: str, rating: int) -> float:
    """A message's feedback as a reward in [0, 1]: thumbs -1/0/1 → 0/0.5/1, stars 1-5 →
    0, 0.25, ..., 1."""
    if scale == "thumbs" and rating in (-1, 0, 1):
        return (rating + 1) / 2
    if scale == "stars" and 1 <= rating <= 5:
        return (rating - 1) / 4
    raise _invalid("rating", "thumbs: -1, 0 or 1; stars: 1 to 5.")


def variant_feedback_record(
    *,
    reward: float,
    variant: AgentVariant | None = None,
    choice: AgentVariantChoice | None = None,
) -> AgentVariant:
    """Update a variant's posterior with a reward in [0, 1]: alpha += reward, beta += 1 -
    reward (the Beta-Bernoulli update, fractional for graded feedback). Given a ``choice``,
    the reward is also stored on it, once: rating the same choice twice is a 409."""
    if isinstance(reward, bool) or not isinstance(reward, int | float) or not 0 <= reward <= 1:
        raise _invalid("reward", "A reward is a number from 0 to 1.")
    if choice is None and variant is None:
        raise ValueError("variant_feedback_record needs a variant or a choice")
    reward = float(reward)
    with transaction.atomic():
        if choice is not None:
            # Conditional update: exactly one feedback per choice, even when two arrive at once.
            claimed = AgentVariantChoice.objects.filter(pk=choice.pk, reward__isnull=True).update(
                reward=reward, rewarded_at=timezone.now()
            )
            if claimed != 1:
                raise Conflict("This choice already has its feedback.", code="already_rated")
            variant_id = choice.variant_id
        else:
            assert variant is not None
            variant_id = variant.pk
        AgentVariant.objects.filter(pk=variant_id).update(
            alpha=F("alpha") + reward,
            beta=F("beta") + (1.0 - reward),
            reward_sum=F("reward_sum") + reward,
            feedback_count=F("feedback_count") + 1,
        )
    return AgentVariant.objects.get(pk=variant_id)


# --- routing -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RouteCandidate:
    agent: Agent
    score: float
    similarity: float
    performance: Performance


def _capability_texts(agent: Agent) -> list[str]:
    texts = [
        f"{item.get('name', '')}: {item.get('description', '')}".strip(": ")
        for item in agent.capabilities or []
    ]
    if not texts and agent.description:
        texts = [agent.description]  # an agent without capabilities is judged by what it says
    return [text for text in texts if text]


def agent_route(
    *, user: User, message: str, preferred_type: str | None = None
) -> list[RouteCandidate]:
    """Every active agent ``user`` may use, scored for ``message``, best first.

    similarity: the largest cosine similarity between the message and one of the agent's
    capabilities (``name: description``, embedded by knowledge's active embedder; the agent's
    description when it lists none; 0 with neither). performance: the posterior mean reward
    of its variants' feedback (0.5, Beta(1, 1)'s mean, with none). score = similarity *
    (0.5 + performance): no feedback leaves the similarity as it is, the best record
    multiplies it by 1.5 and the worst by 0.5. ``preferred_type`` keeps that type only.
    """
    from knowledge.embeddings import active_embedder

    if not isinstance(message, str) or not message.strip():
        raise _invalid("message", "A non-empty message is required.")
    if preferred_type is not None and preferred_type not in agent_types():
        raise _invalid("preferred_type", f"Use one of: {', '.join(sorted(agent_types()))}.")
    agents = list(agent_usable(user=user, agent_type=preferred_type))
    if not agents:
        return []
    texts = {agent.pk: _capability_texts(agent) for agent in agents}
    flat = [text for agent in agents for text in texts[agent.pk]]
    embedder = active_embedder()
    query = _unit(np.asarray(embedder.embed_query(message), dtype=np.float32))
    vectors = _unit(np.asarray(embedder.embed_documents(flat), dtype=np.float32)) if flat else None
    performance = agent_performance(agent_ids=[agent.pk for agent in agents])
    candidates = []
    offset = 0
    for agent in agents:
        count = len(texts[agent.pk])
        similarity = 0.0
        if count and vectors is not None:
            similarity = float(np.max(vectors[offset : offset + count] @ query))
        offset += count
        measured = performance[agent.pk]
        score = similarity * (0.5 + measured.mean)
        candidates.append(RouteCandidate(agent, score, similarity, measured))
    candidates.sort(key=lambda c: (-c.score, c.agent.name, str(c.agent.pk)))
    return candidates


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)


# --- interactions --------------------------------------------------------------------------------
TOOL_RESULT_EXCERPT_CHARS = 2000


def interaction_record(
    *,
    agent: Agent,
    source: str,
    user: User | None = None,
    choice: AgentVariantChoice | None = None,
    conversation_id: Any = None,
    message_id: Any = None,
    model_used: str = "",
    latency_ms: int | None = None,
    tokens_in: int = 0,
    tokens_out: int = 0,
    tool_calls: list[dict[str, Any]] | None = None,
    error: str = "",
    reply: str = "",
    sources: list[dict[str, Any]] | None = None,
    logprobs: list[float] | None = None,
    interaction_id: Any = None,
) -> AgentInteraction:
    """Store one reply of an agent (agents.confidence says how its confidence is measured).
    ``tool_calls`` are {id, name, args, result, latency_ms, error, approval} dicts in call
    order; results are kept as excerpts. ``interaction_id``: an id the caller has already
    shown (the OpenAI-compatible API's completion id)."""
    calls = [
        {**call, "result": str(call.get("result", ""))[:TOOL_RESULT_EXCERPT_CHARS]}
        for call in tool_calls or []
    ]
    confidence, method = reply_confidence(reply=reply, sources=sources or (), logprobs=logprobs)
    return AgentInteraction.objects.create(
        **({"id": interaction_id} if interaction_id is not None else {}),
        agent=agent,
        variant_id=choice.variant_id if choice else None,
        choice=choice,
        user=user,
        source=source,
        conversation_id=conversation_id,
        message_id=message_id,
        model_used=model_used,
        latency_ms=latency_ms,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        tool_calls=calls,
        tool_call_count=len(calls),
        error=error,
        confidence=confidence,
        confidence_method=method,
    )


def interaction_feedback_record(
    *, message_id: Any, scale: str, rating: int
) -> AgentInteraction | None:
    """A user's rating of a reply, into the agent's record and its learning.

    The reply's interaction (found by ``message_id``; None when no agent wrote it) takes
    the reward (``reward_from_feedback``) and the time. When the reply came from a variant
    choice, the variant's posterior learns it: the first rating through
    ``variant_feedback_record``; a changed rating replaces the previous one, so the
    posterior moves by the difference (alpha += new - old, beta -= new - old; the feedback
    count stays). A posterior is always the prior plus each rated reply's current reward:
    re-rating neither counts a reply twice nor is lost.
    """
    reward = reward_from_feedback(scale=scale, rating=rating)
    with transaction.atomic():
        # Locked in this order (interaction, then choice) by every caller: two ratings of
        # one reply at once are applied one after the other, each against the other's result.
        interaction = (
            AgentInteraction.objects.select_for_update().filter(message_id=message_id).first()
        )
        if interaction is None:
            return None
        interaction.feedback_reward = reward
        interaction.feedback_at = timezone.now()
        interaction.save(update_fields=["feedback_reward", "feedback_at"])
        if interaction.choice_id is None:
            return interaction
        choice = AgentVariantChoice.objects.select_for_update().get(pk=interaction.choice_id)
        if choice.reward is None:
            variant_feedback_record(choice=choice, reward=reward)
        elif choice.reward != reward:
            delta = reward - choice.reward
            AgentVariantChoice.objects.filter(pk=choice.pk).update(
                reward=reward, rewarded_at=interaction.feedback_at
            )
            AgentVariant.objects.filter(pk=choice.variant_id).update(
                alpha=F("alpha") + delta,
                beta=F("beta") - delta,
                reward_sum=F("reward_sum") + delta,
            )
    return interaction
