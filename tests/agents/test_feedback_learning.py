"""A user's rating of a reply reaches the agent: its interaction and, from a variant
choice, the variant's posterior (through the real message-feedback API and service)."""

from __future__ import annotations

import numpy as np
import pytest

from agents.models import Agent, AgentInteraction, AgentVariant, AgentVariantChoice
from agents.services import (
    interaction_feedback_record,
    interaction_record,
    variant_choose,
    variant_create,
)
from conversations.services import message_feedback

pytestmark = pytest.mark.django_db


@pytest.fixture
def agent(user) -> Agent:
    return Agent.objects.create(owner=user, created_by=user, name="Helper", slug="helper")


def _answer(agent, user, make_reply, *, choose: bool = True, rng=None):
    choice = variant_choose(agent=agent, user=user, rng=rng) if choose else None
    message = make_reply(user)
    interaction_record(
        agent=agent,
        source="conversation",
        user=user,
        choice=choice,
        conversation_id=message.conversation_id,
        message_id=message.pk,
        model_used="local",
        latency_ms=120,
        reply=message.content,
    )
    return message, choice


def _rate(client, message, scale, rating):
    return client.post(
        f"/api/v1/messages/{message.pk}/feedback/",
        {"scale": scale, "rating": rating, "comment": ""},
        format="json",
    )


def test_rating_a_reply_rewards_its_interaction_and_its_variant(
    api_client, agent, user, make_reply
):
    variant_create(agent=agent, name="only")
    message, choice = _answer(agent, user, make_reply)

    response = _rate(api_client, message, "stars", 4)

    assert response.status_code == 200, response.json()
    interaction = AgentInteraction.objects.get(message_id=message.pk)
    assert interaction.feedback_reward == 0.75
    assert interaction.feedback_at is not None
    choice.refresh_from_db()
    assert (choice.reward, choice.rewarded_at is not None) == (0.75, True)
    variant = AgentVariant.objects.get(name="only")
    assert (variant.alpha, variant.beta, variant.feedback_count) == (1.75, 1.25, 1)


def test_a_changed_rating_replaces_the_last_one_in_the_posterior(
    api_client, agent, user, make_reply
):
    variant_create(agent=agent, name="only")
    message, choice = _answer(agent, user, make_reply)

    assert _rate(api_client, message, "thumbs", 1).status_code == 200
    assert _rate(api_client, message, "thumbs", -1).status_code == 200  # no 409, no 500
    assert _rate(api_client, message, "stars", 3).status_code == 200

    variant = AgentVariant.objects.get(name="only")
    # Beta(1, 1) + the reply's current reward (0.5) once: the earlier ratings are replaced.
    assert (variant.alpha, variant.beta) == (1.5, 1.5)
    assert (variant.feedback_count, variant.reward_sum) == (1, 0.5)
    choice.refresh_from_db()
    assert choice.reward == 0.5
    assert AgentInteraction.objects.get(message_id=message.pk).feedback_reward == 0.5


def test_the_same_rating_twice_changes_nothing(api_client, agent, user, make_reply):
    variant_create(agent=agent, name="only")
    message, _ = _answer(agent, user, make_reply)

    _rate(api_client, message, "thumbs", 1)
    _rate(api_client, message, "thumbs", 1)

    variant = AgentVariant.objects.get(name="only")
    assert (variant.alpha, variant.beta, variant.feedback_count) == (2.0, 1.0, 1)


def test_a_reply_without_a_variant_rewards_only_its_interaction(
    api_client, agent, user, make_reply
):
    message, _ = _answer(agent, user, make_reply, choose=False)

    assert _rate(api_client, message, "thumbs", 0).status_code == 200

    assert AgentInteraction.objects.get(message_id=message.pk).feedback_reward == 0.5


def test_a_reply_no_agent_wrote_is_rated_as_before(api_client, user, make_reply):
    message = make_reply(user)

    response = _rate(api_client, message, "thumbs", 1)

    assert response.status_code == 200
    assert response.json()["feedback"]["rating"] == 1
    assert interaction_feedback_record(message_id=message.pk, scale="thumbs", rating=1) is None


def test_a_rating_the_message_refuses_changes_no_posterior(api_client, agent, user, make_reply):
    variant_create(agent=agent, name="only")
    message, _ = _answer(agent, user, make_reply)

    assert _rate(api_client, message, "thumbs", 3).status_code == 400

    assert AgentVariant.objects.get(name="only").feedback_count == 0
    assert AgentInteraction.objects.get(message_id=message.pk).feedback_reward is None


def test_feedback_through_the_message_service_makes_the_better_variant_win(agent, user, make_reply):
    # Each variant's chance of a thumbs-up; "b" is the better one. Every round goes the
    # way a conversation's does: choose, reply, record, rate through message_feedback.
    success = {"a": 0.35, "b": 0.8, "c": 0.5}
    for name in success:
        variant_create(agent=agent, name=name, system_prompt=f"Prompt {name}.")
    rng = np.random.default_rng(20261202)
    feedback_rng = np.random.default_rng(7)

    for _ in range(600):
        message, choice = _answer(agent, user, make_reply, rng=rng)
        thumbs = 1 if feedback_rng.random() < success[choice.variant.name] else -1
        message_feedback(message=message, scale="thumbs", rating=thumbs, comment="", user=user)

    last = list(
        AgentVariantChoice.objects.filter(agent=agent)
        .order_by("-created_at", "-id")
        .values_list("variant__name", flat=True)[:200]
    )
    assert last.count("b") >= 180, {name: last.count(name) for name in success}
    assert not AgentVariantChoice.objects.filter(reward__isnull=True).exists()
    assert AgentInteraction.objects.filter(feedback_reward__isnull=False).count() == 600
    best = AgentVariant.objects.get(agent=agent, name="b")
    assert best.feedback_count == best.choices.count()
    assert best.posterior_mean > 0.7
