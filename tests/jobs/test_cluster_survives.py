"""The job queue survives the death of any django-q2 process (issue 11.1), and `make run`'s
supervisor restarts what died and stops promptly. Real clusters on the test database; every
wait has a generous deadline and nothing asserts how long anything took."""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
from datetime import timedelta
from pathlib import Path

import psutil
import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone
from django_q.models import OrmQ
from django_q.status import Stat

from chatter_project.launcher import Supervisor
from chatter_project.launcher import group_alive as _group_alive
from jobs.models import Job, JobStatus
from jobs.services import enqueue
from tests.jobs.support import job_in, wait_for


def cluster_stat(workers: int) -> Stat:
    """The running cluster's heartbeat once all its processes are up and idle."""

    def ready() -> Stat | None:
        for stat in Stat.get_all():
            processes = [stat.sentinel, stat.pusher, stat.monitor, *stat.workers]
            # A stopped cluster's last heartbeat stays in the cache until it expires: only a
            # heartbeat whose processes are all alive is the running cluster's.
            if len(stat.workers) == workers and all(map(alive, processes)):
                return stat
        return None

    return wait_for(ready, timeout=90, what="the cluster is up")


def alive(pid: int) -> bool:
    try:
        return bool(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wchan(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return ""


def runs_jobs_again(n: int = 3) -> None:
    jobs = [enqueue("test.record", args={"n": i}) for i in range(n)]
    for job in jobs:
        wait_for(job_in(job.pk, JobStatus.SUCCEEDED), timeout=120, what=f"job {job.pk} runs")


def test_killing_an_idle_worker_blocked_in_the_queue_read_does_not_wedge_the_queue(cluster):
    cluster(workers=2)
    stat = cluster_stat(2)
    # One idle worker holds the task queue's reader lock while it waits in the pipe read.
    reader = wait_for(
        lambda: next((pid for pid in stat.workers if wchan(pid) == "anon_pipe_read"), None),
        what="a worker blocked in the queue read",
    )

    os.kill(reader, signal.SIGKILL)

    runs_jobs_again()


@pytest.mark.parametrize("process", ["pusher", "monitor"])
def test_killing_the_pusher_or_the_monitor_keeps_jobs_flowing_and_acknowledged(cluster, process):
    cluster(workers=2)
    stat = cluster_stat(2)
    runs_jobs_again(1)
    wait_for(lambda: not OrmQ.objects.exists(), what="the first token is acknowledged")

    os.kill(getattr(stat, process), signal.SIGKILL)
    wait_for(
        lambda: any(getattr(s, process) not in (0, getattr(stat, process)) for s in Stat.get_all()),
        what=f"the sentinel replaces the {process}",
    )

    runs_jobs_again()
    # The monitor acknowledges each token (the ORM broker deletes its row); a wedged result
    # queue would leave them to be delivered again and again.
    wait_for(lambda: not OrmQ.objects.exists(), timeout=120, what="every token is acknowledged")


@pytest.fixture
def supervisor(transactional_db, monkeypatch):
    """`make run`'s Supervisor running qcluster and the jobs clock on the test database."""
    monkeypatch.setenv("CHATTER_DB_NAME", connection.settings_dict["NAME"])
    monkeypatch.setenv("CHATTER_WORKERS", "2")
    monkeypatch.setenv("CHATTER_JOBS_HANDLER_MODULES", "tests.jobs.handlers")
    manage = str(Path(settings.BASE_DIR) / "manage.py")
    out = io.StringIO()
    running = Supervisor(
        {
            "workers": [sys.executable, manage, "qcluster"],
            "jobs-clock": [sys.executable, manage, "jobs_clock"],
        },
        out,
        env=dict(os.environ),
    )
    running.start(handle_signals=False)
    loop = threading.Thread(target=running.run_until_stopped, daemon=True)
    loop.start()
    running.out_text = out.getvalue  # type: ignore[attr-defined]
    running.loop = loop  # type: ignore[attr-defined]
    yield running
    running.stopping = True
    loop.join(timeout=60)


def test_killing_the_sentinel_restarts_the_cluster_and_jobs_run_again(supervisor):
    stat = cluster_stat(2)
    old_group = supervisor.children["workers"].pid

    os.kill(stat.sentinel, signal.SIGKILL)

    wait_for(
        lambda: supervisor.children["workers"].pid != old_group,
        what=f"the supervisor restarts qcluster\n{supervisor.out_text()}",
    )
    wait_for(lambda: not _group_alive(old_group), what="the old cluster's orphans are gone")
    runs_jobs_again()
    assert "workers exited with status" in supervisor.out_text()


def test_killing_the_jobs_clock_restarts_it(supervisor):
    clock = supervisor.children["jobs-clock"]
    os.kill(clock.pid, signal.SIGKILL)

    wait_for(lambda: supervisor.children["jobs-clock"].pid != clock.pid, what="a new clock")
    # Only the clock promotes scheduled jobs: the new one does.
    job = enqueue("test.record", run_at=timezone.now() + timedelta(hours=1))
    Job.objects.filter(pk=job.pk).update(available_at=timezone.now())
    wait_for(job_in(job.pk, JobStatus.SUCCEEDED), timeout=120, what="the new clock promotes it")


def test_stopping_hands_a_running_job_back_and_leaves_no_process(supervisor):
    cluster_stat(2)
    job = enqueue("test.until_cancelled")
    wait_for(
        lambda: Job.objects.filter(pk=job.pk, progress_message="waiting for a cancel").exists(),
        what="the handler is running",
    )

    supervisor.stopping = True
    supervisor.loop.join(timeout=60)

    assert not supervisor.loop.is_alive() and "Stopped." in supervisor.out_text()
    for child in supervisor.children.values():
        assert not _group_alive(child.pid)
    handed_back = Job.objects.get(pk=job.pk)
    assert handed_back.status == JobStatus.PENDING and handed_back.attempts == 0
    assert OrmQ.objects.exists()  # its token waits in the broker for the next start


def test_a_cluster_that_takes_no_work_for_long_is_killed_and_restarted(supervisor, settings):
    from jobs.clock import clusters_restart_wedged
    from jobs.selectors import queue_stall

    stat = cluster_stat(2)
    for pid in stat.workers:
        os.kill(pid, signal.SIGSTOP)  # alive, heartbeating, and taking nothing: wedged
    job = enqueue("test.record")
    long_ago = timezone.now() - timedelta(seconds=300)
    Job.objects.filter(pk=job.pk).update(available_at=long_ago, dispatched_at=long_ago)
    settings.JOBS_CLUSTER_RESTART_SECONDS = 5
    assert queue_stall() and "1 due job(s)" in queue_stall()

    assert clusters_restart_wedged() == 1

    wait_for(job_in(job.pk, JobStatus.SUCCEEDED), timeout=120, what="the restarted cluster runs it")
    assert queue_stall() is None
