"""What only real worker processes can prove: order under a backlog, kill -9 recovery,
hung workers, and the Redis broker. Each test starts `manage.py qcluster` on the test
database and drives the jobs clock from here."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.db.models.functions import Now
from django.utils import timezone

from jobs.clock import Clock, jobs_reap
from jobs.models import Job, JobStatus
from jobs.selectors import live_workers
from jobs.services import enqueue
from tests.jobs.support import job_in, wait_for
from tests.servers import free_port

PLAN = ["low", "normal", "critical", "low", "high", "normal", "critical", "high", "low", "normal"]
RANK = {"critical": 0, "high": 1, "normal": 2, "low": 3}


def started_order() -> list[int]:
    return list(Job.objects.order_by("started_at").values_list("id", flat=True))


def expected_order(jobs: list[Job]) -> list[int]:
    return [job.pk for job in sorted(jobs, key=lambda job: (RANK[job.priority], job.pk))]


def test_a_real_worker_drains_a_mixed_backlog_highest_priority_first(cluster):
    jobs = [enqueue("test.record", args={"n": n}, priority=p) for n, p in enumerate(PLAN)]

    running = cluster(workers=1)
    wait_for(
        lambda: Job.objects.filter(status=JobStatus.SUCCEEDED).count() == len(jobs),
        what=f"the backlog drains\n{running.output()}",
    )

    assert started_order() == expected_order(jobs)
    assert all(len(job.q_task_id) == 32 for job in Job.objects.all())
    # The cluster's heartbeat is what the stats call live workers.
    wait_for(lambda: live_workers() == 1, what="the stats see the one live worker")


def test_a_running_job_sees_the_cancel_sent_through_the_api(cluster, staff_client):
    cluster(workers=1)
    api = staff_client
    job_id = api.post("/api/v1/jobs/", {"handler": "test.until_cancelled"}, format="json").json()[
        "id"
    ]
    wait_for(
        lambda: Job.objects.filter(pk=job_id, progress_message="waiting for a cancel").exists(),
        what="the handler is running",
    )

    body = api.post(f"/api/v1/jobs/{job_id}/cancel/").json()
    assert body["status"] == "running" and body["cancel_requested"] is True

    cancelled = wait_for(job_in(job_id, JobStatus.CANCELLED), what="the handler stops")
    assert cancelled.finished_at is not None and cancelled.progress == 10


@pytest.mark.django_db(transaction=True)
def test_the_clock_command_promotes_due_jobs_and_stops_cleanly_on_sigterm():
    job = enqueue("test.record", run_at=timezone.now() + timedelta(hours=1))
    Job.objects.filter(pk=job.pk).update(available_at=timezone.now())
    clock = subprocess.Popen(
        [sys.executable, "manage.py", "jobs_clock"],
        cwd=settings.BASE_DIR,
        env={**os.environ, "CHATTER_DB_NAME": connection.settings_dict["NAME"]},
    )
    try:
        wait_for(job_in(job.pk, JobStatus.PENDING), what="the clock promotes the due job")
    finally:
        clock.send_signal(signal.SIGTERM)
        assert clock.wait(timeout=30) == 0


def test_a_worker_killed_mid_job_is_retried_later_and_completes_never_twice_at_once(cluster):
    cluster(workers=1)
    job = enqueue("test.hang_first_attempt")
    running = wait_for(
        lambda: Job.objects.filter(pk=job.pk, progress_message="attempt 1 started").first(),
        what="attempt 1 starts",
    )

    # Frozen but alive: it still holds its lock, so nobody may take the job over.
    os.kill(running.worker_pid, signal.SIGSTOP)
    assert jobs_reap() == {"reaped": 0, "killed": 0}
    assert Job.objects.get(pk=job.pk).status == JobStatus.RUNNING

    os.kill(running.worker_pid, signal.SIGKILL)
    wait_for(lambda: jobs_reap()["reaped"] == 1, what="the dead worker's job is reaped")
    reaped = Job.objects.get(pk=job.pk)
    assert reaped.status == JobStatus.SCHEDULED and reaped.error.startswith("WorkerLost")

    clock = Clock()
    done = wait_for(
        lambda: clock.tick() and job_in(job.pk, JobStatus.SUCCEEDED)(),
        what="the retry completes on the reincarnated worker",
    )
    assert done.attempts == 2 and done.result == {"attempt": 2}
    assert done.worker_pid != running.worker_pid


def test_a_handler_python_cannot_interrupt_is_killed_after_its_timeout(cluster, settings):
    settings.JOBS_HARD_KILL_GRACE_SECONDS = 1
    cluster(workers=1)
    job = enqueue("test.stuck_in_c")
    wait_for(
        lambda: Job.objects.filter(pk=job.pk, progress_message="summing").exists(),
        what="the handler starts",
    )

    clock = Clock()
    dead = wait_for(
        lambda: clock.tick() and job_in(job.pk, JobStatus.DEAD)(),
        what="the hung worker is killed and its job buried",
    )
    assert dead.error == "JobTimeout: exceeded its timeout of 1 s; worker killed"

    # The cluster replaced the worker: the queue still works.
    after = enqueue("test.record")
    wait_for(job_in(after.pk, JobStatus.SUCCEEDED), what="a job after the kill runs")


def test_the_clock_leaves_alone_a_job_that_extended_its_timeout(cluster, settings):
    settings.JOBS_HARD_KILL_GRACE_SECONDS = 0
    cluster(workers=1)
    job = enqueue("test.outlives_its_timeout", args={"extend": True, "older_than": 6})
    wait_for(
        lambda: Job.objects.filter(
            pk=job.pk, progress_message="working", started_at__lt=Now() - timedelta(seconds=3)
        ).exists(),
        what="the job runs past its original timeout and the kill grace",
    )

    # Without the extension in its row, the clock would kill this worker now.
    assert jobs_reap() == {"reaped": 0, "killed": 0}

    done = wait_for(job_in(job.pk, JobStatus.SUCCEEDED), what="the extended job succeeds")
    assert done.attempts == 1 and done.timeout_seconds >= 120


ENQUEUE_SCRIPT = """
import json, sys, django
django.setup()
from jobs.services import enqueue
for n, priority in enumerate(json.loads(sys.argv[1])):
    enqueue("test.record", args={"n": n}, priority=priority)
"""


def test_with_redis_url_tokens_travel_through_redis_and_priority_still_holds(cluster):
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server binary on this machine")
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        redis = subprocess.Popen(
            ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
            cwd=workdir,
            stdout=subprocess.DEVNULL,
        )
        try:
            env = {
                **os.environ,
                "REDIS_URL": f"redis://127.0.0.1:{port}/0",
                "CHATTER_DB_NAME": connection.settings_dict["NAME"],
                "CHATTER_JOBS_HANDLER_MODULES": "tests.jobs.handlers",
                "DJANGO_SETTINGS_MODULE": "chatter_project.settings",
            }
            subprocess.run(
                [sys.executable, "-c", ENQUEUE_SCRIPT, json.dumps(PLAN)],
                cwd=settings.BASE_DIR,
                env=env,
                check=True,
                timeout=120,
            )
            jobs = list(Job.objects.order_by("id"))
            assert len(jobs) == len(PLAN)

            running = cluster(workers=1, REDIS_URL=env["REDIS_URL"])
            wait_for(
                lambda: Job.objects.filter(status=JobStatus.SUCCEEDED).count() == len(PLAN),
                what=f"the backlog drains through redis\n{running.output()}",
            )
            assert started_order() == expected_order(jobs)
        finally:
            redis.terminate()
            redis.wait(timeout=10)
