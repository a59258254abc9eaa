"""The queue's rules, driven in this process: the executor a django-q2 worker runs
(`run_next_job`) and the clock's steps, against the real database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone
from django_q.models import OrmQ

from jobs import worker
from jobs.clock import Clock, jobs_promote_due, jobs_reap, jobs_redispatch_lost
from jobs.models import Job, JobPriority, JobStatus
from jobs.services import enqueue, job_cancel, job_retry, retry_delay
from tests.jobs.support import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def run_all() -> list[int]:
    """Run due jobs until none is left; the ids in the order they were claimed."""
    order = []
    while True:
        before = set(Job.objects.filter(status=JobStatus.PENDING).values_list("id", flat=True))
        if worker.run_next_job() is None:
            return order
        after = set(Job.objects.filter(status=JobStatus.PENDING).values_list("id", flat=True))
        order.extend(sorted(before - after))


def test_a_free_worker_takes_the_highest_priority_first_and_fifo_within_one():
    plan = ["low", "normal", "critical", "low", "high", "normal", "critical", "high"]
    jobs = [enqueue("test.record", args={"n": n}, priority=p) for n, p in enumerate(plan)]

    order = run_all()

    rank = {"critical": 0, "high": 1, "normal": 2, "low": 3}
    expected = sorted(jobs, key=lambda job: (rank[job.priority], job.pk))
    assert order == [job.pk for job in expected]
    assert set(Job.objects.values_list("status", flat=True)) == {JobStatus.SUCCEEDED}


def test_a_low_job_that_waited_longer_than_the_aging_offset_outranks_new_critical_work(settings):
    settings.JOBS_PRIORITY_AGING_SECONDS = 60
    old_low = enqueue("test.record", priority=JobPriority.LOW)
    # It became due 4 minutes ago: more than low's 3 x 60 s offset over critical.
    Job.objects.filter(pk=old_low.pk).update(
        available_at=timezone.now() - timedelta(minutes=4),
        rank_at=timezone.now() - timedelta(minutes=1),
    )
    critical = enqueue("test.record", priority=JobPriority.CRITICAL)

    assert run_all() == [old_low.pk, critical.pk]


def test_a_past_run_at_does_not_buy_a_better_rank():
    critical = enqueue("test.record", priority=JobPriority.CRITICAL)
    sneaky = enqueue(
        "test.record", priority=JobPriority.LOW, run_at=timezone.now() - timedelta(days=365)
    )

    assert run_all() == [critical.pk, sneaky.pk]


def test_each_due_job_sends_one_token_to_django_q2_after_commit():
    enqueue("test.record")
    enqueue("test.record", run_at=timezone.now() + timedelta(hours=1))

    assert OrmQ.objects.count() == 1


def test_the_token_waits_for_the_commit_and_a_rollback_sends_none():
    with transaction.atomic():
        enqueue("test.record")
        assert OrmQ.objects.count() == 0  # not yet: a worker could not see the row
    assert OrmQ.objects.count() == 1

    with pytest.raises(RuntimeError), transaction.atomic():
        enqueue("test.record")
        raise RuntimeError("the request failed")
    assert Job.objects.count() == 1 and OrmQ.objects.count() == 1


def test_a_failing_job_is_retried_with_backoff_and_then_succeeds():
    job = enqueue("test.fail_until", args={"succeed_on": 3})

    assert worker.run_next_job() == JobStatus.SCHEDULED
    job.refresh_from_db()
    assert job.attempts == 1 and "attempt 1 fails on purpose" in job.error
    assert "Traceback" in job.traceback and job.available_at > job.started_at

    for _ in (2, 3):
        Job.objects.filter(pk=job.pk).update(available_at=timezone.now())
        assert jobs_promote_due() == 1
        worker.run_next_job()
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and job.result == {"attempt": 3}
    assert job.error == "" and job.progress == 100


def test_after_the_last_attempt_the_job_is_dead_with_its_traceback():
    job = enqueue("test.fail_until", args={"succeed_on": 99}, max_attempts=2)
    worker.run_next_job()
    Job.objects.filter(pk=job.pk).update(available_at=timezone.now())
    jobs_promote_due()

    assert worker.run_next_job() == JobStatus.DEAD
    job.refresh_from_db()
    assert job.attempts == 2 and job.finished_at is not None
    assert "RuntimeError: attempt 2 fails on purpose" in job.error
    assert 'raise RuntimeError(f"attempt {ctx.attempt} fails on purpose")' in job.traceback


def test_a_permanent_error_fails_at_once_without_retries():
    job = enqueue("test.permanent")

    assert worker.run_next_job() == JobStatus.FAILED
    job.refresh_from_db()
    assert job.attempts == 1 and job.error == "PermanentJobError: this input can never work"


def test_a_result_that_is_not_json_fails_the_job_permanently():
    job = enqueue("test.not_json")

    assert worker.run_next_job() == JobStatus.FAILED
    assert "non-JSON result" in Job.objects.get(pk=job.pk).error


def test_a_job_whose_handler_this_worker_lacks_fails_with_a_clear_error():
    job = enqueue("test.record")
    Job.objects.filter(pk=job.pk).update(handler="gone.away")

    assert worker.run_next_job() == JobStatus.FAILED
    assert "no handler 'gone.away'" in Job.objects.get(pk=job.pk).error


def test_a_handler_that_overruns_its_timeout_is_interrupted():
    job = enqueue("test.sleep", args={"seconds": 30}, timeout=1)

    assert worker.run_next_job() == JobStatus.DEAD
    job.refresh_from_db()
    assert job.error == "JobTimeout: exceeded its timeout of 1 s"


def test_a_handler_that_extends_its_timeout_outlives_the_original_one_and_succeeds():
    job = enqueue("test.outlives_its_timeout", args={"extend": True})

    assert worker.run_next_job() == JobStatus.SUCCEEDED

    job.refresh_from_db()
    assert job.timeout_seconds >= 120
    assert job.result == {"timeout_seconds": job.timeout_seconds}


def test_a_handler_that_does_not_extend_still_times_out():
    job = enqueue("test.outlives_its_timeout", args={"extend": False})

    assert worker.run_next_job() == JobStatus.DEAD

    job.refresh_from_db()
    assert job.timeout_seconds == 2
    assert job.error == "JobTimeout: exceeded its timeout of 2 s"


def test_an_extension_never_shortens_and_stops_at_the_cap(settings):
    settings.JOBS_MAX_EXTENDED_TIMEOUT_SECONDS = 600
    enqueue("test.record", timeout=300)
    claimed = worker.job_claim_next()
    assert claimed is not None
    with worker._Alarm(claimed.timeout_seconds) as alarm:
        ctx = worker._context(worker.executor_connection(), claimed, alarm)

        assert ctx.extend_timeout(10) == 300  # asks for less than it has: unchanged
        assert ctx.extend_timeout(10_000) == 600
        assert alarm.seconds == 600
    assert Job.objects.get(pk=claimed.id).timeout_seconds == 600


def test_retry_delay_grows_exponentially_within_the_jitter_and_stops_at_the_cap():
    for attempt, nominal in [(1, 2), (2, 4), (3, 8), (4, 16)]:
        delays = [retry_delay(attempt, base=2, cap=100) for _ in range(200)]
        assert nominal * 0.75 <= min(delays) and max(delays) <= nominal * 1.25
        assert len(set(delays)) > 1  # jittered
    assert max(retry_delay(30, base=2, cap=100) for _ in range(50)) <= 125


def test_a_cancelled_pending_job_never_runs():
    job = enqueue("test.record")
    job_cancel(job=job)

    assert worker.run_next_job() is None
    assert Job.objects.get(pk=job.pk).status == JobStatus.CANCELLED


def test_retry_requeues_a_dead_job_with_fresh_attempts():
    job = enqueue("test.fail_until", args={"succeed_on": 2}, max_attempts=1)
    assert worker.run_next_job() == JobStatus.DEAD
    # The operator fixes what made it fail, then retries it.
    Job.objects.filter(pk=job.pk).update(args={"succeed_on": 1})
    job = job_retry(job=Job.objects.get(pk=job.pk))

    assert job.status == JobStatus.PENDING and job.attempts == 0 and job.error == ""
    assert worker.run_next_job() == JobStatus.SUCCEEDED


def test_scheduled_jobs_become_due_on_the_clock():
    later = enqueue("test.record", run_at=timezone.now() + timedelta(seconds=30))
    assert later.status == JobStatus.SCHEDULED
    assert Clock().tick()["promoted"] == 0

    Job.objects.filter(pk=later.pk).update(available_at=timezone.now())
    assert Clock().tick()["promoted"] == 1
    assert worker.run_next_job() == JobStatus.SUCCEEDED


def test_the_reaper_leaves_a_job_alone_while_its_worker_holds_the_lock():
    enqueue("test.record")
    claimed = worker.job_claim_next()  # this process's executor session now holds the lock
    assert claimed is not None

    assert jobs_reap() == {"reaped": 0, "killed": 0}
    assert Job.objects.get(pk=claimed.id).status == JobStatus.RUNNING

    worker.executor_connection_close()  # the worker "dies": its session and lock are gone
    # The server ends the session a moment after the client goes.
    wait_for(lambda: jobs_reap()["reaped"] == 1, what="the job is reaped")
    job = Job.objects.get(pk=claimed.id)
    assert job.status == JobStatus.SCHEDULED and job.error.startswith("WorkerLost")


def test_lost_tokens_are_sent_again_when_live_workers_sit_idle(settings, monkeypatch):
    settings.JOBS_REDISPATCH_SECONDS = 30
    job = enqueue("test.record")
    OrmQ.objects.all().delete()  # the token was lost (say, a Redis restart)
    monkeypatch.setattr("jobs.clock.live_workers", lambda: 2)

    assert jobs_redispatch_lost() == 0  # sent just now: not lost yet
    Job.objects.filter(pk=job.pk).update(dispatched_at=timezone.now() - timedelta(minutes=5))
    assert jobs_redispatch_lost() == 1
    assert OrmQ.objects.count() == 1

    monkeypatch.setattr("jobs.clock.live_workers", lambda: 0)
    Job.objects.filter(pk=job.pk).update(dispatched_at=timezone.now() - timedelta(minutes=5))
    assert jobs_redispatch_lost() == 0  # nobody would take them


def test_dedupe_key_returns_the_active_job_and_allows_a_new_one_once_it_finished():
    first = enqueue("test.record", dedupe_key="nightly")
    again = enqueue("test.record", dedupe_key="nightly")
    assert again.pk == first.pk and again.deduplicated

    worker.run_next_job()
    third = enqueue("test.record", dedupe_key="nightly")
    assert third.pk != first.pk


def test_a_claim_is_exclusive_across_sessions():
    enqueue("test.record")
    first = worker.job_claim_next()
    # Another worker process (another session) finds nothing left to claim.
    import psycopg

    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    with psycopg.connect(**params, autocommit=True) as other:
        assert first is not None and worker.job_claim_next(other) is None


# --- giving up: on_give_up, and cancelled jobs are never retried ----------------------------
@pytest.fixture
def gave_up():
    from tests.jobs.handlers import GAVE_UP

    GAVE_UP.clear()
    yield GAVE_UP
    GAVE_UP.clear()


@pytest.mark.parametrize("how", ["cancel_then_fail", "cancel_then_timeout"])
def test_a_job_whose_cancel_was_requested_is_never_retried_whatever_it_fails_with(gave_up, how):
    job = enqueue("test.gives_up", args={"how": how})

    assert worker.run_next_job() == JobStatus.CANCELLED

    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and job.attempts == 1 and job.finished_at
    assert [(g.job_id, g.status) for g in gave_up] == [(job.pk, JobStatus.CANCELLED)]


def test_the_clock_never_retries_a_cancelled_job_whose_worker_died(gave_up):
    job = enqueue("test.gives_up", args={"how": "fail"})
    Job.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING,
        attempts=1,
        started_at=timezone.now() - timedelta(seconds=60),
        cancel_requested_at=timezone.now(),
    )

    assert jobs_reap()["reaped"] == 1

    assert Job.objects.get(pk=job.pk).status == JobStatus.CANCELLED
    assert [(g.job_id, g.status) for g in gave_up] == [(job.pk, JobStatus.CANCELLED)]
    assert "JobTimeout" in gave_up[0].error


def test_on_give_up_hears_of_every_final_failure_once_and_never_of_a_retry(gave_up):
    dead = enqueue("test.gives_up", args={"how": "fail"})
    failed = enqueue("test.gives_up", args={"how": "permanent"})
    cancelled = enqueue("test.gives_up", args={"how": "fail"})
    job_cancel(job=cancelled)

    assert worker.run_next_job() == JobStatus.SCHEDULED  # attempt 1 of 2: a retry, no hook
    assert worker.run_next_job() == JobStatus.FAILED
    assert [(g.job_id, g.status) for g in gave_up] == [
        (cancelled.pk, JobStatus.CANCELLED),
        (failed.pk, JobStatus.FAILED),
    ]
    wait_for(lambda: jobs_promote_due() or Job.objects.get(pk=dead.pk).status == "pending")
    assert worker.run_next_job() == JobStatus.DEAD

    assert gave_up[-1].job_id == dead.pk and gave_up[-1].status == JobStatus.DEAD
    assert gave_up[-1].args == {"how": "fail"} and "fails every time" in gave_up[-1].error
    assert len(gave_up) == 3


def test_a_handler_cannot_swallow_its_timeout_with_except_exception():
    job = enqueue("test.gives_up", args={"how": "swallow_timeout"})

    # JobTimeout passes through the handler's `except Exception`: the attempt fails.
    assert worker.run_next_job() == JobStatus.SCHEDULED
    assert Job.objects.get(pk=job.pk).error.startswith("JobTimeout: exceeded its timeout")


def test_no_token_is_re_sent_while_tokens_still_wait_in_the_broker(settings, monkeypatch):
    # A wedged cluster took none of its tokens: re-sending every 30 s only piled them up.
    settings.JOBS_REDISPATCH_SECONDS = 30
    jobs = [enqueue("test.record") for _ in range(3)]
    monkeypatch.setattr("jobs.clock.live_workers", lambda: 2)
    old = timezone.now() - timedelta(minutes=5)
    Job.objects.filter(pk__in=[job.pk for job in jobs]).update(dispatched_at=old)

    for _ in range(3):
        assert jobs_redispatch_lost() == 0
    assert OrmQ.objects.count() == 3


def test_stats_and_ready_report_a_queue_where_due_jobs_wait_and_none_starts(
    settings, staff_client, anon_client, monkeypatch
):
    settings.JOBS_STALL_SECONDS = 60
    monkeypatch.setattr("jobs.selectors.live_workers", lambda: 2)  # there, and taking nothing
    job = enqueue("test.record")
    assert staff_client.get("/api/v1/jobs/stats/").json()["stalled"] is None
    assert anon_client.get("/api/v1/ready/").status_code == 200

    Job.objects.filter(pk=job.pk).update(available_at=timezone.now() - timedelta(seconds=90))

    stats = staff_client.get("/api/v1/jobs/stats/").json()
    assert stats["stalled"].startswith("1 due job(s) have waited over 60 s")
    assert stats["tokens_waiting"] == 1
    ready = anon_client.get("/api/v1/ready/")
    assert ready.status_code == 503
    assert ready.json()["error"]["details"]["checks"]["jobs"]["ok"] is False

    monkeypatch.setattr("jobs.selectors.live_workers", lambda: 0)
    assert anon_client.get("/api/v1/ready/").status_code == 200  # no cluster: the stats say it
    assert "live workers: 0" in staff_client.get("/api/v1/jobs/stats/").json()["stalled"]

    worker.run_next_job()  # a worker takes it: flowing again
    assert staff_client.get("/api/v1/jobs/stats/").json()["stalled"] is None
