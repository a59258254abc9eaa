"""The jobs API through real URLs: create, list, detail, cancel, retry, stats."""

from __future__ import annotations

import pytest
from django.utils import timezone

from jobs.models import Job, JobPriority, JobStatus
from jobs.services import enqueue

pytestmark = pytest.mark.django_db

URL = "/api/v1/jobs/"


def test_it_creates_a_job_for_the_caller(api_client, user):
    response = api_client.post(
        URL,
        {"handler": "test.record", "args": {"document_id": 7}, "priority": "high"},
        format="json",
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    job = Job.objects.get(pk=body["id"])
    assert job.owner == user and job.args == {"document_id": 7}
    assert {k: body[k] for k in ("handler", "args", "priority", "status", "owner", "attempts")} == {
        "handler": "test.record",
        "args": {"document_id": 7},
        "priority": "high",
        "status": "pending",
        "owner": "alice",
        "attempts": 0,
    }
    assert body["max_attempts"] == 3 and body["timeout"] == 30 and body["progress"] == 0


def test_a_future_run_at_makes_the_job_scheduled(api_client):
    run_at = (timezone.now() + timezone.timedelta(hours=1)).isoformat()
    response = api_client.post(URL, {"handler": "test.record", "run_at": run_at}, format="json")

    assert response.status_code == 201
    assert response.json()["status"] == "scheduled" and response.json()["next_attempt_at"]


def test_a_user_cannot_enqueue_a_handler_that_is_not_user_enqueueable(api_client):
    response = api_client.post(URL, {"handler": "maintenance"}, format="json")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "handler_not_allowed"
    assert not Job.objects.exists()


def test_staff_may_enqueue_any_handler(staff_client):
    response = staff_client.post(URL, {"handler": "maintenance", "priority": "low"}, format="json")

    assert response.status_code == 201 and response.json()["handler"] == "maintenance"


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"handler": "no.such.handler"}, "unknown_handler"),
        ({"handler": "test.fail_until", "args": {}}, "invalid_args"),
        ({"handler": "test.fail_until", "args": {"succeed_on": 1, "extra": 2}}, "invalid_args"),
        ({"handler": "test.record", "priority": "urgent"}, "validation_error"),
        ({"handler": "test.record", "args": [1, 2]}, "validation_error"),
        ({"handler": "test.record", "max_attempts": 0}, "validation_error"),
        ({"handler": "test.record", "max_attempts": 26}, "validation_error"),  # declared: 1-25
        ({"handler": "test.record", "timeout": 999999}, "validation_error"),  # declared
        ({}, "validation_error"),
    ],
)
def test_bad_input_is_a_400_in_the_envelope(staff_client, payload, code):
    response = staff_client.post(URL, payload, format="json")

    assert response.status_code == 400, response.json()
    assert response.json()["error"]["code"] == code
    assert not Job.objects.exists()


def test_the_same_dedupe_key_returns_the_active_job_with_200(api_client):
    payload = {"handler": "test.record", "dedupe_key": "reindex-7"}
    first = api_client.post(URL, payload, format="json")
    second = api_client.post(URL, payload, format="json")

    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]


def test_users_see_only_their_own_jobs_and_staff_see_all(
    api_client, other_client, staff_client, user, other_user
):
    mine = enqueue("test.record", owner=user)
    theirs = enqueue("test.record", owner=other_user)

    assert [j["id"] for j in api_client.get(URL).json()["results"]] == [mine.pk]
    assert api_client.get(f"{URL}{theirs.pk}/").status_code == 404
    assert api_client.post(f"{URL}{theirs.pk}/cancel/").status_code == 404
    assert other_client.get(f"{URL}{theirs.pk}/").status_code == 200
    listed = staff_client.get(URL).json()
    assert listed["count"] == 2 and {j["id"] for j in listed["results"]} == {mine.pk, theirs.pk}


def test_the_list_filters_by_status_priority_and_handler(api_client, user):
    low = enqueue("test.record", owner=user, priority="low")
    enqueue("test.sleep", args={"seconds": 1}, owner=user)

    assert [j["id"] for j in api_client.get(URL, {"priority": "low"}).json()["results"]] == [low.pk]
    assert api_client.get(URL, {"handler": "test.sleep"}).json()["count"] == 1
    assert api_client.get(URL, {"status": "dead"}).json()["count"] == 0


def test_cancel_a_pending_job_and_cancelling_again_is_a_conflict(api_client, user):
    job = enqueue("test.record", owner=user)

    response = api_client.post(f"{URL}{job.pk}/cancel/")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled" and response.json()["cancel_requested"]

    again = api_client.post(f"{URL}{job.pk}/cancel/")
    assert again.status_code == 409 and again.json()["error"]["code"] == "not_cancellable"


def test_cancel_a_running_job_sets_its_flag(api_client, user):
    job = enqueue("test.record", owner=user)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING, attempts=1)

    body = api_client.post(f"{URL}{job.pk}/cancel/").json()

    assert body["status"] == "running" and body["cancel_requested"] is True


def test_retry_a_dead_job_and_retrying_an_active_one_is_a_conflict(api_client, user):
    job = enqueue("test.record", owner=user)
    assert api_client.post(f"{URL}{job.pk}/retry/").status_code == 409

    Job.objects.filter(pk=job.pk).update(status=JobStatus.DEAD, attempts=3, error="boom")
    body = api_client.post(f"{URL}{job.pk}/retry/").json()

    assert body["status"] == "pending" and body["attempts"] == 0 and body["error"] == ""


def test_the_traceback_is_shown_to_staff_only(api_client, staff_client, user):
    job = enqueue("test.record", owner=user)
    Job.objects.filter(pk=job.pk).update(
        status=JobStatus.DEAD, error="RuntimeError: x", traceback="Traceback (most recent...)"
    )

    assert api_client.get(f"{URL}{job.pk}/").json()["traceback"] == ""
    assert staff_client.get(f"{URL}{job.pk}/").json()["traceback"].startswith("Traceback")
    assert api_client.get(f"{URL}{job.pk}/").json()["error"] == "RuntimeError: x"


def test_stats_count_by_status_and_priority_within_what_the_caller_sees(
    api_client, staff_client, user, other_user
):
    enqueue("test.record", owner=user, priority="high")
    enqueue("test.record", owner=user, priority="high")
    done = enqueue("test.record", owner=other_user, priority="low")
    now = timezone.now()
    Job.objects.filter(pk=done.pk).update(
        status=JobStatus.SUCCEEDED,
        attempts=1,
        started_at=now - timezone.timedelta(seconds=3),
        finished_at=now - timezone.timedelta(seconds=1),
        available_at=now - timezone.timedelta(seconds=4),
    )

    mine = api_client.get(f"{URL}stats/").json()
    assert mine["by_status"]["pending"] == 2 and mine["by_status"]["succeeded"] == 0
    assert mine["by_priority"]["high"]["pending"] == 2
    assert mine["oldest_pending_age_seconds"] >= 0

    everything = staff_client.get(f"{URL}stats/").json()
    assert everything["by_status"]["succeeded"] == 1
    assert everything["by_priority"]["low"]["succeeded"] == 1
    assert everything["throughput"]["last_minute"] == 1
    assert everything["throughput"]["last_hour"] == 1
    assert everything["wait_seconds"]["p50"] == pytest.approx(1, abs=0.01)
    assert everything["run_seconds"]["p95"] == pytest.approx(2, abs=0.01)
    assert set(everything["workers"]) == {"live", "busy"}


def test_the_api_needs_a_key(anon_client):
    assert anon_client.get(URL).status_code == 401
    assert anon_client.post(URL, {"handler": "test.record"}, format="json").status_code == 401


def test_retry_while_another_active_job_holds_the_dedupe_key_is_a_conflict(api_client, user):
    old = enqueue("test.record", owner=user, dedupe_key="reindex-7")
    Job.objects.filter(pk=old.pk).update(status=JobStatus.DEAD, attempts=3)
    active = enqueue("test.record", owner=user, dedupe_key="reindex-7")
    assert active.pk != old.pk

    response = api_client.post(f"{URL}{old.pk}/retry/")

    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "dedupe_conflict"
    assert Job.objects.get(pk=old.pk).status == JobStatus.DEAD


def test_a_run_at_too_far_in_the_future_is_a_400(api_client):
    response = api_client.post(
        URL, {"handler": "test.record", "run_at": "9999-12-31T23:59:59Z"}, format="json"
    )

    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid_run_at"
    assert not Job.objects.exists()


@pytest.mark.parametrize("param", ["status", "priority"])
def test_an_unknown_enum_filter_is_a_400_naming_the_allowed_values(api_client, param):
    response = api_client.get(URL, {param: "bogus"})

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    allowed = JobStatus.values if param == "status" else ["critical", "high", "normal", "low"]
    assert all(value in str(error["details"][param]) for value in allowed)


def test_the_schema_declares_the_list_filters_allowed_values(api_client):
    schema = api_client.get("/api/schema/", {"format": "json"}).json()
    parameters = {p["name"]: p for p in schema["paths"]["/api/v1/jobs/"]["get"]["parameters"]}

    assert sorted(parameters["status"]["schema"]["enum"]) == sorted(JobStatus.values)
    assert sorted(parameters["priority"]["schema"]["enum"]) == sorted(JobPriority.values)
