"""A guardrail metric a variant degrades past its threshold pauses the experiment and raises
an alert; a healthy one does not; the check is queued by events and run by maintenance."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from accounts.models import AuditLog
from core.models import Event
from experiments.models import Experiment, ExperimentAlert, MetricEvent
from experiments.services import (
    GUARDRAILS_HANDLER,
    experiment_assign,
    experiment_guardrails_check,
    metric_event_record,
)
from jobs.models import Job
from jobs.registry import handler_get, maintenance_steps
from tests.experiments.conftest import assign_many

pytestmark = pytest.mark.django_db

GUARDED = [
    {"name": "satisfaction", "type": "user_satisfaction", "primary": True},
    {"name": "errors", "type": "error_rate", "guardrail": True, "guardrail_threshold": 0.1},
]


def _error_events(experiment, rates, units=400, seed=3):
    rng = np.random.default_rng(seed)
    events = []
    for assignment in assign_many(experiment, units):
        rate = rates[assignment.variant.name]
        events += [
            MetricEvent(
                experiment=experiment,
                variant=assignment.variant,
                assignment=assignment,
                metric="errors",
                value=float(rng.random() < rate),
                source="turn",
            )
            for _ in range(5)
        ]
    MetricEvent.objects.bulk_create(events)


def test_a_degrading_guardrail_pauses_the_experiment_with_an_alert(user, make_experiment, caplog):
    experiment = make_experiment(user, start=True, metrics=GUARDED)
    _error_events(experiment, {"control": 0.05, "friendly": 0.30})

    with caplog.at_level(logging.WARNING, logger="chatter.experiments"):
        alerts = experiment_guardrails_check(experiment=experiment)

    experiment.refresh_from_db()
    assert experiment.status == "paused"
    assert [(a.kind, a.metric, a.variant) for a in alerts] == [("guardrail", "errors", "friendly")]
    alert = ExperimentAlert.objects.get()
    assert alert.details["lift"] > 0.1 and alert.details["sequential_ci_low"] > 0
    assert "paused" in alert.message and "errors" in alert.message
    assert alert.message in caplog.text
    assert AuditLog.objects.get(action="experiment.pause").details == {
        "reason": "guardrail: errors (friendly)"
    }
    # The platform's alert and the pause, as events for the owner's webhooks.
    platform_alert = Event.objects.get(type="system.alert")
    assert platform_alert.owner_id == user.pk
    assert platform_alert.data["code"] == "experiment.guardrail"
    assert platform_alert.data["level"] == "warning"
    assert platform_alert.data["message"] == alert.message
    assert platform_alert.data["details"]["experiment_id"] == str(experiment.pk)
    assert platform_alert.data["details"]["metric"] == "errors"
    paused = Event.objects.get(type="experiment.paused")
    assert paused.data["reason"] == "guardrail: errors (friendly)"


def test_a_healthy_guardrail_leaves_it_running(user, make_experiment):
    experiment = make_experiment(user, start=True, metrics=GUARDED)
    _error_events(experiment, {"control": 0.10, "friendly": 0.10})

    assert experiment_guardrails_check(experiment=experiment) == []
    experiment.refresh_from_db()
    assert experiment.status == "running"
    assert not ExperimentAlert.objects.exists()


def test_a_degradation_within_the_threshold_is_tolerated(user, make_experiment):
    metrics = [GUARDED[0], {**GUARDED[1], "guardrail_threshold": 9.0}]  # +900% allowed
    experiment = make_experiment(user, start=True, metrics=metrics)
    _error_events(experiment, {"control": 0.05, "friendly": 0.30})

    assert experiment_guardrails_check(experiment=experiment) == []
    assert Experiment.objects.get().status == "running"


def test_an_event_on_a_guardrail_queues_one_check_a_minute(user, make_experiment):
    experiment = make_experiment(user, start=True, metrics=GUARDED)
    experiment_assign(experiment=experiment, unit_id="u1")

    for _ in range(3):
        metric_event_record(experiment=experiment, unit_id="u1", metric="errors", value=1)
        experiment.refresh_from_db()

    job = Job.objects.get(handler=GUARDRAILS_HANDLER)
    assert job.args == {"experiment_id": str(experiment.pk)}
    assert experiment.guardrails_checked_at is not None


def test_the_queued_job_and_the_maintenance_step_run_the_check(user, make_experiment):
    experiment = make_experiment(user, start=True, metrics=GUARDED)
    _error_events(experiment, {"control": 0.05, "friendly": 0.30})
    step = next(s for s in maintenance_steps() if s.name == "experiment_guardrails")

    assert step.func() == {"checked": 1, "paused": 1}
    assert Experiment.objects.get().status == "paused"

    # Resumed by hand, it is paused again by the job the next event queues.
    Experiment.objects.update(status="running")
    result = handler_get(GUARDRAILS_HANDLER).func(None, experiment_id=str(experiment.pk))
    assert len(result["alerts"]) == 1
    assert Experiment.objects.get().status == "paused"
