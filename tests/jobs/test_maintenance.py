"""Maintenance: the built-in steps, the step registry higher apps use, and its schedule."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from django_q.models import Schedule

from jobs import registry, worker
from jobs.maintenance import expire_cache_rows, maintenance_run, prune_finished_jobs
from jobs.models import Job, JobStatus
from jobs.services import MAINTENANCE_SCHEDULE_NAME, enqueue, maintenance_schedule_ensure
from jobs.tasks import maintenance_enqueue


@pytest.fixture
def isolated_steps(monkeypatch):
    """The registry with its built-in steps, restored after the test."""
    monkeypatch.setattr(registry, "_maintenance_steps", dict(registry._maintenance_steps))


@pytest.mark.django_db
def test_expired_rows_of_the_shared_cache_table_are_deleted():
    with connection.cursor() as cursor:
        # Rows committed by earlier tests' servers (rate limits) are not this test's.
        cursor.execute("DELETE FROM chatter_cache")
        cursor.execute(
            "INSERT INTO chatter_cache (cache_key, counter, expires) VALUES "
            "('old', 1, extract(epoch FROM now()) - 10), "
            "('live', 1, extract(epoch FROM now()) + 600), ('forever', 1, NULL)"
        )

    assert expire_cache_rows() == {"deleted": 1}
    with connection.cursor() as cursor:
        cursor.execute("SELECT cache_key FROM chatter_cache ORDER BY cache_key")
        assert [row[0] for row in cursor.fetchall()] == ["forever", "live"]


@pytest.mark.django_db
def test_finished_jobs_past_the_retention_are_pruned_and_active_ones_kept(settings):
    settings.JOBS_RETENTION_DAYS = 7
    old = timezone.now() - timedelta(days=8)
    old_done = enqueue("test.record")
    old_dead = enqueue("test.record")
    recent_done = enqueue("test.record")
    old_pending = enqueue("test.record")
    Job.objects.filter(pk__in=[old_done.pk, old_dead.pk]).update(
        status=JobStatus.SUCCEEDED, finished_at=old
    )
    Job.objects.filter(pk=old_dead.pk).update(status=JobStatus.DEAD)
    Job.objects.filter(pk=recent_done.pk).update(
        status=JobStatus.SUCCEEDED, finished_at=timezone.now()
    )
    Job.objects.filter(pk=old_pending.pk).update(created_at=old)

    assert prune_finished_jobs() == {"deleted": 2, "retention_days": 7}
    assert set(Job.objects.values_list("pk", flat=True)) == {recent_done.pk, old_pending.pk}


@pytest.mark.django_db
def test_steps_registered_by_other_apps_run_in_order_and_a_failing_one_does_not_stop_the_rest(
    isolated_steps,
):
    ran = []

    @registry.maintenance_step("conversations.prune_checkpoints")
    def prune_checkpoints():
        ran.append("checkpoints")
        return {"deleted": 3}

    @registry.maintenance_step("datamgmt.expire_exports", order=50)
    def expire_exports():
        ran.append("exports")
        raise OSError("export volume is read-only")

    summary = maintenance_run()

    assert ran == ["exports", "checkpoints"]
    known = {
        "expire_cache_rows",
        "prune_finished_jobs",
        "datamgmt.expire_exports",
        "conversations.prune_checkpoints",
        "analyze",
    }
    # Steps the installed apps register (conversations' real one) run too; check the order
    # of the ones this test knows.
    assert [step for step in summary["steps"] if step in known] == [
        "expire_cache_rows",
        "prune_finished_jobs",
        "datamgmt.expire_exports",
        "conversations.prune_checkpoints",
        "analyze",
    ]
    assert summary["failed"] == ["datamgmt.expire_exports"]
    assert summary["steps"]["conversations.prune_checkpoints"] == {"deleted": 3}
    assert summary["steps"]["datamgmt.expire_exports"]["error"] == (
        "OSError: export volume is read-only"
    )
    assert summary["steps"]["analyze"] == {"analyzed": True}


def test_a_step_name_cannot_be_taken_twice(isolated_steps):
    with pytest.raises(ValueError, match="already registered"):
        registry.maintenance_step("analyze")(lambda: None)


@pytest.mark.django_db(transaction=True)
def test_the_maintenance_job_runs_every_step_on_a_worker():
    job_id = maintenance_enqueue()
    assert maintenance_enqueue() == job_id  # one maintenance job at a time

    assert worker.run_next_job() == JobStatus.SUCCEEDED
    job = Job.objects.get(pk=job_id)
    assert job.priority == "low" and job.owner is None
    assert job.result["failed"] == []
    assert set(job.result["steps"]) >= {"expire_cache_rows", "prune_finished_jobs", "analyze"}


@pytest.mark.django_db(transaction=True)
def test_a_failing_step_makes_the_maintenance_job_retry(isolated_steps):
    registry.maintenance_step("broken")(lambda: 1 / 0)
    job_id = maintenance_enqueue()

    assert worker.run_next_job() == JobStatus.SCHEDULED
    assert "steps failed: broken" in Job.objects.get(pk=job_id).error


@pytest.mark.django_db
def test_the_schedule_is_ensured_once_and_points_at_a_real_function(settings):
    settings.JOBS_MAINTENANCE_INTERVAL_MINUTES = 30
    maintenance_schedule_ensure()
    maintenance_schedule_ensure()

    schedule = Schedule.objects.get(name=MAINTENANCE_SCHEDULE_NAME)
    assert Schedule.objects.count() == 1
    assert (schedule.schedule_type, schedule.minutes, schedule.repeats) == ("I", 30, -1)
    assert schedule.func == "jobs.tasks.maintenance_enqueue"
    assert schedule.next_run > timezone.now()
