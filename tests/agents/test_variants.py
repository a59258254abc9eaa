"""Thompson sampling over an agent's variants, with posteriors in PostgreSQL."""

from __future__ import annotations

import numpy as np
import pytest

from agents.models import Agent, AgentVariant, AgentVariantChoice
from agents.services import (
    reward_from_feedback,
    variant_choose,
    variant_create,
    variant_feedback_record,
)
from core.errors import ApplicationError, Conflict

pytestmark = pytest.mark.django_db


@pytest.fixture
def agent(user) -> Agent:
    return Agent.objects.create(owner=user, created_by=user, name="Helper", slug="helper")


def test_simulated_feedback_makes_the_better_variant_win(agent, user):
    # Each variant's chance of a thumbs-up; "b" is the better one.
    success = {"a": 0.35, "b": 0.8, "c": 0.5}
    for name in success:
        variant_create(agent=agent, name=name, system_prompt=f"Prompt {name}.")
    rng = np.random.default_rng(20261202)
    feedback_rng = np.random.default_rng(7)

    for _ in range(600):
        choice = variant_choose(agent=agent, user=user, rng=rng)
        thumbs = 1 if feedback_rng.random() < success[choice.variant.name] else -1
        variant_feedback_record(
            choice=choice, reward=reward_from_feedback(scale="thumbs", rating=thumbs)
        )

    last = list(
        AgentVariantChoice.objects.filter(agent=agent)
        .order_by("-id")
        .values_list("variant__name", flat=True)[:200]
    )
    assert last.count("b") >= 180, {name: last.count(name) for name in success}
    assert AgentVariantChoice.objects.filter(agent=agent).count() == 600
    assert not AgentVariantChoice.objects.filter(reward__isnull=True).exists()
    best = AgentVariant.objects.get(agent=agent, name="b")
    assert best.posterior_mean > 0.7
    assert best.feedback_count == best.choices.count()


def test_the_posterior_is_the_beta_bernoulli_update(agent):
    variant = variant_create(agent=agent, name="a")

    variant = variant_feedback_record(variant=variant, reward=1.0)
    variant = variant_feedback_record(variant=variant, reward=0.25)

    assert (variant.alpha, variant.beta) == (2.25, 1.75)
    assert variant.feedback_count == 2
    assert variant.reward_sum == 1.25


def test_every_choice_is_recorded_with_every_draw(agent, user):
    for name in ("a", "b"):
        variant_create(agent=agent, name=name)

    choice = variant_choose(agent=agent, user=user, rng=np.random.default_rng(1))

    assert set(choice.samples) == {"a", "b"}
    assert choice.sample == max(choice.samples.values())
    assert choice.samples[choice.variant.name] == choice.sample
    assert choice.user == user


def test_a_seeded_generator_makes_the_choices_reproducible(agent):
    for name in ("a", "b", "c"):
        variant_create(agent=agent, name=name)

    first = [
        variant_choose(agent=agent, rng=np.random.default_rng(5)).variant.name for _ in range(3)
    ]
    second = [
        variant_choose(agent=agent, rng=np.random.default_rng(5)).variant.name for _ in range(3)
    ]

    assert first == second


def test_inactive_variants_are_never_chosen_and_no_variant_means_no_choice(agent):
    assert variant_choose(agent=agent) is None
    variant_create(agent=agent, name="on")
    off = variant_create(agent=agent, name="off")
    AgentVariant.objects.filter(pk=off.pk).update(active=False, alpha=1000)

    names = {variant_choose(agent=agent).variant.name for _ in range(20)}

    assert names == {"on"}


def test_a_choice_takes_feedback_once(agent):
    variant_create(agent=agent, name="a")
    choice = variant_choose(agent=agent)
    variant_feedback_record(choice=choice, reward=1)

    with pytest.raises(Conflict):
        variant_feedback_record(choice=choice, reward=0)
    assert AgentVariant.objects.get(name="a").feedback_count == 1


@pytest.mark.parametrize("reward", [-0.1, 1.5, True, "1", float("nan")])
def test_rewards_are_numbers_from_0_to_1(agent, reward):
    variant = variant_create(agent=agent, name="a")

    with pytest.raises(ApplicationError):
        variant_feedback_record(variant=variant, reward=reward)


@pytest.mark.parametrize(
    ("scale", "rating", "reward"),
    [
        ("thumbs", -1, 0.0),
        ("thumbs", 0, 0.5),
        ("thumbs", 1, 1.0),
        ("stars", 1, 0.0),
        ("stars", 3, 0.5),
        ("stars", 5, 1.0),
    ],
)
def test_feedback_maps_to_a_reward(scale, rating, reward):
    assert reward_from_feedback(scale=scale, rating=rating) == reward


@pytest.mark.parametrize(("scale", "rating"), [("thumbs", 2), ("stars", 0), ("likes", 1)])
def test_unknown_feedback_is_refused(scale, rating):
    with pytest.raises(ApplicationError):
        reward_from_feedback(scale=scale, rating=rating)


def test_variant_parameters_are_checked(agent):
    with pytest.raises(ApplicationError):
        variant_create(agent=agent, name="x", parameters={"temperature": 5})
    with pytest.raises(ApplicationError):
        variant_create(agent=agent, name="x", parameters={"colour": "red"})
    with pytest.raises(ApplicationError):
        variant_create(agent=agent, name="x", parameters={"model": "nosuch:model"})
    variant = variant_create(agent=agent, name="x", parameters={"model": "local", "max_tokens": 9})
    assert variant.parameters == {"model": "local", "max_tokens": 9}
    with pytest.raises(Conflict):
        variant_create(agent=agent, name="x")
