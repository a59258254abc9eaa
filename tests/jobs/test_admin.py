"""The jobs admin: the queue's figures on the changelist, tracebacks, bulk actions, adding."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from jobs.clock import jobs_promote_due
from jobs.models import Job, JobStatus
from jobs.services import enqueue

pytestmark = pytest.mark.django_db

URL = "/admin/jobs/job/"


@pytest.fixture
def admin_client(staff_user) -> Client:
    client = Client()
    client.force_login(staff_user)
    return client


def test_the_changelist_shows_the_queue_figures(admin_client):
    enqueue("test.record", priority="critical")
    enqueue("test.record", priority="critical")

    page = admin_client.get(URL).content.decode()

    assert 'id="job-stats"' in page
    assert "<th>critical</th><td>2</td>" in page.replace("\n", "").replace("  ", "")
    assert "workers: 0 live, 0 busy" in page and "oldest pending:" in page


def test_a_dead_job_shows_its_traceback(admin_client):
    job = enqueue("test.record")
    Job.objects.filter(pk=job.pk).update(
        status=JobStatus.DEAD, error="RuntimeError: boom", traceback="Traceback <here>"
    )

    page = admin_client.get(f"{URL}{job.pk}/change/").content.decode()

    assert "<pre style='white-space: pre-wrap'>Traceback &lt;here&gt;</pre>" in page


def test_bulk_cancel_and_retry_call_the_services(admin_client):
    pending = enqueue("test.record")
    dead = enqueue("test.record")
    Job.objects.filter(pk=dead.pk).update(status=JobStatus.DEAD, attempts=3)
    ids = [pending.pk, dead.pk]

    response = admin_client.post(URL, {"action": "cancel_jobs", "_selected_action": ids})
    assert response.status_code == 302
    assert Job.objects.get(pk=pending.pk).status == JobStatus.CANCELLED
    assert Job.objects.get(pk=dead.pk).status == JobStatus.DEAD

    admin_client.post(URL, {"action": "retry_jobs", "_selected_action": ids})
    assert set(Job.objects.values_list("status", "attempts")) == {(JobStatus.PENDING, 0)}


def test_run_now_makes_a_scheduled_job_due_for_the_clock(admin_client):
    job = enqueue("test.record", run_at=timezone.now() + timedelta(days=1))
    assert jobs_promote_due() == 0

    admin_client.post(URL, {"action": "run_now", "_selected_action": [job.pk]})

    assert jobs_promote_due() == 1
    assert Job.objects.get(pk=job.pk).status == JobStatus.PENDING


def test_an_operator_adds_a_job_through_the_enqueue_service(admin_client, staff_user):
    response = admin_client.post(
        f"{URL}add/",
        {"handler": "maintenance", "args": "{}", "priority": "high", "dedupe_key": ""},
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    job = Job.objects.get()
    assert (job.handler, job.priority, job.status, job.owner) == (
        "maintenance",
        "high",
        JobStatus.PENDING,
        staff_user,
    )
    assert job.timeout_seconds == 1800  # the handler's default


def test_arguments_that_do_not_fit_the_handler_are_a_form_error_not_a_crash(admin_client):
    response = admin_client.post(
        f"{URL}add/", {"handler": "test.fail_until", "args": '{"wrong": 1}', "priority": "normal"}
    )

    assert response.status_code == 200
    assert "The arguments do not fit handler" in response.content.decode()
    assert not Job.objects.exists()


def test_the_job_page_is_read_only_with_a_cancel_button_that_cancels(admin_client):
    job = enqueue("test.record")

    page = admin_client.get(f"{URL}{job.pk}/change/").content.decode()

    assert "<h1>View job</h1>" in page
    assert 'name="_save"' not in page and 'name="_continue"' not in page
    assert 'name="_addanother"' not in page
    cancel_url = f"{URL}{job.pk}/cancel/"
    assert f'formaction="{cancel_url}"' in page and "Retry job" not in page

    response = admin_client.post(cancel_url, follow=True)

    assert Job.objects.get(pk=job.pk).status == JobStatus.CANCELLED
    assert f"Job {job.pk} cancelled (cancelled)." in response.content.decode()
    # Finished now: the page offers a retry instead, which re-queues through the service.
    page = response.content.decode()
    assert "Cancel job" not in page and f'formaction="{URL}{job.pk}/retry/"' in page
    admin_client.post(f"{URL}{job.pk}/retry/")
    assert Job.objects.get(pk=job.pk).status == JobStatus.PENDING


def test_cancelling_a_finished_job_reports_the_services_refusal(admin_client):
    job = enqueue("test.record")
    Job.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED)

    response = admin_client.post(f"{URL}{job.pk}/cancel/", follow=True)

    assert "A succeeded job cannot be cancelled." in response.content.decode()
    assert Job.objects.get(pk=job.pk).status == JobStatus.SUCCEEDED


def test_job_operations_need_a_post_and_the_change_permission(admin_client, user):
    job = enqueue("test.record")

    assert admin_client.get(f"{URL}{job.pk}/cancel/").status_code == 405
    user.is_staff = True
    user.save()
    viewer = Client()
    viewer.force_login(user)  # staff without the jobs permissions
    assert viewer.post(f"{URL}{job.pk}/cancel/").status_code == 403
    assert Job.objects.get(pk=job.pk).status == JobStatus.PENDING


def test_the_stats_come_after_the_add_button_not_under_it(admin_client):
    enqueue("test.record")

    page = admin_client.get(URL).content.decode()

    assert page.index('class="object-tools"') < page.index('id="job-stats"')
    assert 'id="job-stats" style="clear: both' in page


def test_job_times_show_seconds(admin_client):
    job = enqueue("test.record")

    listing = admin_client.get(URL).content.decode()
    page = admin_client.get(f"{URL}{job.pk}/change/").content.decode()

    assert f"{job.created_at:%Y-%m-%d %H:%M:%S}" in listing
    assert f"{job.created_at:%Y-%m-%d %H:%M:%S}" in page
