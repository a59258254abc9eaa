"""A reply's confidence is measured (token log-probabilities, cited passages' similarity),
never a constant; unknown when nothing measured it."""

from __future__ import annotations

import math

import pytest

from agents.confidence import reply_confidence
from agents.models import Agent
from agents.services import interaction_record

SOURCES = [{"n": 1, "similarity": 0.8}, {"n": 2, "similarity": 0.4}, {"n": 3, "similarity": -0.2}]


def test_logprobs_give_the_geometric_mean_token_probability():
    value, method = reply_confidence(reply="Yes.", logprobs=[math.log(0.9), math.log(0.4)])

    assert method == "logprobs"
    assert value == pytest.approx(math.sqrt(0.9 * 0.4))


def test_an_impossible_token_makes_it_zero_rather_than_being_dropped():
    assert reply_confidence(reply="x", logprobs=[-0.1, -math.inf]) == (0.0, "logprobs")


def test_rounding_above_zero_and_nans_do_not_inflate_it():
    value, _ = reply_confidence(reply="x", logprobs=[0.3, math.log(0.5), math.nan])

    assert value == pytest.approx(math.sqrt(0.5))


def test_logprobs_win_over_citations():
    assert reply_confidence(reply="[1]", sources=SOURCES, logprobs=[0.0])[1] == "logprobs"


def test_citations_give_the_mean_similarity_of_the_cited_passages():
    value, method = reply_confidence(reply="See [1] and [2], again [1].", sources=SOURCES)

    assert method == "citations"
    assert value == pytest.approx(0.6)


def test_a_made_up_citation_counts_zero():
    value, _ = reply_confidence(reply="As [1] and [9] say.", sources=SOURCES)

    assert value == pytest.approx(0.4)


def test_an_uncited_answer_gets_half_the_passages_mean_similarity():
    value, _ = reply_confidence(reply="I think so.", sources=SOURCES)

    assert value == pytest.approx((0.8 + 0.4 - 0.2) / 3 / 2)


def test_negative_similarity_is_clamped():
    assert reply_confidence(reply="[3]", sources=SOURCES) == (0.0, "citations")


def test_nothing_measured_means_unknown():
    assert reply_confidence(reply="Hello.") == (None, "")
    assert reply_confidence(reply="[1]", sources=[{"n": 1, "similarity": None}]) == (None, "")
    assert reply_confidence(reply="x", logprobs=[]) == (None, "")


@pytest.mark.django_db
def test_an_interaction_stores_the_measured_confidence_and_its_method(user):
    agent = Agent.objects.create(owner=user, name="Helper", slug="helper")

    cited = interaction_record(agent=agent, source="conversation", reply="[2]", sources=SOURCES)
    bare = interaction_record(agent=agent, source="openai", reply="Hi.")

    assert (cited.confidence, cited.confidence_method) == (0.4, "citations")
    assert (bare.confidence, bare.confidence_method) == (None, "")


def test_an_index_in_code_is_not_a_citation():
    value, _ = reply_confidence(reply="Use items[0] or m[1][2], as [1] shows.", sources=SOURCES)

    assert value == pytest.approx(0.8)
