from __future__ import annotations

from typing import Any

import pytest

from accounts.models import User
from experiments.assignment import variant_for
from experiments.models import Assignment, Experiment
from experiments.services import experiment_create, experiment_start
from tests.conversations.conftest import openai_server  # noqa: F401  (the loopback OpenAI fixture)


def prompt_experiment(**overrides: Any) -> dict[str, Any]:
    """A prompt experiment's request body: control and one variant, a primary metric."""
    body: dict[str, Any] = {
        "name": "Terse or friendly",
        "key": "terse-or-friendly",
        "type": "prompt",
        "variants": [
            {"name": "control", "is_control": True, "configuration": {}},
            {"name": "friendly", "configuration": {"system_prompt": "Be warm and friendly."}},
        ],
        "metrics": [
            {"name": "satisfaction", "type": "user_satisfaction", "primary": True},
            {"name": "latency", "type": "response_time"},
        ],
    }
    body.update(overrides)
    return body


@pytest.fixture
def make_experiment():
    """An experiment made through the service (started with ``start=True``)."""

    def make(owner: User, *, start: bool = False, **overrides: Any) -> Experiment:
        experiment = experiment_create(owner=owner, **prompt_experiment(**overrides))
        if start:
            experiment = experiment_start(experiment=experiment, actor=owner)
        return experiment

    return make


def assign_many(experiment: Experiment, count: int) -> list[Assignment]:
    """``count`` units assigned as experiment_assign would (the hash decides), in one insert."""
    variants = list(experiment.variants.all())
    Assignment.objects.bulk_create(
        [
            Assignment(
                experiment=experiment,
                variant=variant_for(experiment, variants, f"u{i}"),
                unit_id=f"u{i}",
                source=Assignment.Source.API,
            )
            for i in range(count)
        ]
    )
    return list(
        Assignment.objects.filter(experiment=experiment).select_related("variant").order_by("id")
    )
