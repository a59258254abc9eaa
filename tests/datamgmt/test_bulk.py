"""Confirmed bulk operations as jobs: checked in the request, done by a job with the
requester's rights, seen only by them, all or nothing."""

from __future__ import annotations

import pytest

from accounts.models import AuditLog
from conversations.models import Conversation, Message
from core.models import Event
from datamgmt import pg
from datamgmt.models import Export
from datamgmt.services import bulk
from jobs.models import Job
from knowledge.models import Document

from .conftest import seed_conversation, seed_document

BULK = "/api/v1/bulk-operations/"


def _queue(client, body):  # type: ignore[no-untyped-def]
    response = client.post(BULK, {**body, "confirm": True}, format="json")
    assert response.status_code == 202, response.json()
    return response.json()


@pytest.mark.parametrize(
    ("who", "body", "status", "code"),
    [
        ("user", {"action": "explode", "target": "conversations"}, 400, "validation_error"),
        ("user", {"action": "delete", "target": "galaxies"}, 400, "validation_error"),
        (
            "user",
            {"action": "delete", "target": "conversations", "filters": {"nope": 1}},
            400,
            "invalid_filters",
        ),
        (
            "user",
            {"action": "delete", "target": "conversations", "filters": {"title__regex": ".*"}},
            400,
            "invalid_filters",
        ),
        ("user", {"action": "reassign", "target": "documents", "to_user": "bob"}, 403, None),
        ("staff", {"action": "reassign", "target": "documents", "to_user": "nobody"}, 400, None),
        ("staff", {"action": "reassign", "target": "documents"}, 400, "invalid_to_user"),
    ],
)
def test_a_refused_operation_is_a_4xx_at_once_and_queues_nothing(
    api_client, staff_client, db, who, body, status, code
):
    client = api_client if who == "user" else staff_client
    for confirm in (False, True):
        response = client.post(BULK, {**body, "confirm": confirm}, format="json")
        assert response.status_code == status, response.json()
        if code is not None:
            assert response.json()["error"]["code"] == code
    assert not Job.objects.exists()


def test_the_job_is_its_requesters_and_nobody_elses(api_client, other_client, staff_client, user):
    seed_conversation(user, title="Spam")
    job = _queue(api_client, {"action": "delete", "target": "conversations"})
    assert job["owner"] == "alice"
    assert job["handler"] == "datamgmt_bulk_operation"
    assert job["args"] == {
        "action": "delete",
        "target": "conversations",
        "filters": {},
        "to_user": None,
    }

    assert api_client.get(f"/api/v1/jobs/{job['id']}/").status_code == 200
    assert other_client.get(f"/api/v1/jobs/{job['id']}/").status_code == 404
    assert other_client.post(f"/api/v1/jobs/{job['id']}/cancel/").status_code == 404
    assert other_client.get("/api/v1/jobs/").json()["results"] == []
    assert staff_client.get(f"/api/v1/jobs/{job['id']}/").status_code == 200


def test_a_user_cannot_queue_the_handler_through_the_jobs_api(api_client, other_user, db):
    # Otherwise its args would skip the request's checks.
    response = api_client.post(
        "/api/v1/jobs/",
        {"handler": "datamgmt_bulk_operation", "args": {"action": "delete", "target": "agents"}},
        format="json",
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "handler_not_allowed"
    assert not Job.objects.exists()


@pytest.mark.parametrize("prefix", ["/api/v1/", "/api/v2/", "/api/"])
def test_the_link_to_the_job_keeps_the_clients_api_version(api_client, db, prefix):
    response = api_client.post(
        f"{prefix}bulk-operations/",
        {"action": "delete", "target": "agents", "confirm": True},
        format="json",
    )
    assert response.status_code == 202
    job = response.json()
    assert job["url"] == f"http://testserver{prefix}jobs/{job['id']}/" == response["Location"]
    assert api_client.get(job["url"]).json()["id"] == job["id"]


@pytest.mark.django_db(transaction=True)
def test_a_users_job_touches_only_their_own_objects(api_client, user, other_user, run_jobs):
    mine = seed_conversation(user, title="Spam")
    theirs = seed_conversation(other_user, title="Spam")
    job = _queue(
        api_client,
        {"action": "delete", "target": "conversations", "filters": {"title": "Spam"}},
    )

    assert run_jobs() == ["succeeded"]

    assert not Conversation.objects.filter(pk=mine.pk).exists()
    assert Conversation.objects.filter(pk=theirs.pk).exists()
    assert Job.objects.get(pk=job["id"]).result == {
        "dry_run": False,
        "action": "delete",
        "target": "conversations",
        "counts": {"conversations.Conversation": 1, "conversations.Message": 3},
    }
    audit = AuditLog.objects.get(action="datamgmt.bulk_delete")
    assert audit.actor == user and audit.details["filters"] == {"title": "Spam"}


@pytest.mark.django_db(transaction=True)
def test_a_job_whose_requester_lost_staff_fails_and_changes_nothing(
    staff_client, staff_user, user, other_user, run_jobs
):
    document = seed_document(user)
    job = _queue(
        staff_client,
        {"action": "reassign", "target": "documents", "filters": {}, "to_user": "bob"},
    )
    staff_user.is_staff = False
    staff_user.save(update_fields=["is_staff"])

    assert run_jobs() == ["failed"]

    assert Document.objects.get(pk=document.pk).owner == user
    assert "Only staff reassign objects." in Job.objects.get(pk=job["id"]).error
    assert not AuditLog.objects.filter(action="datamgmt.bulk_reassign").exists()


@pytest.mark.django_db(transaction=True)
def test_an_archive_whose_delete_fails_deletes_nothing_and_stays_an_export(
    api_client, user, run_jobs, monkeypatch
):
    spam = [seed_conversation(user, title=f"Spam {n}") for n in range(2)]

    def delete_then_fail(queryset, progress=None, *, reason):  # type: ignore[no-untyped-def]
        bulk_delete(queryset, progress, reason=reason)  # the rows are gone in this transaction
        raise OSError("the disk is on fire")

    bulk_delete = bulk.queryset_delete
    monkeypatch.setattr(bulk, "queryset_delete", delete_then_fail)
    job = _queue(
        api_client,
        {"action": "archive", "target": "conversations", "filters": {"title__startswith": "Spam"}},
    )

    assert run_jobs() == ["scheduled"]  # the attempt failed; the job will retry

    assert "OSError: the disk is on fire" in Job.objects.get(pk=job["id"]).error
    assert Conversation.objects.filter(pk__in=[c.pk for c in spam]).count() == 2
    assert Message.objects.filter(conversation__in=spam).count() == 6
    assert not Event.objects.filter(type="conversation.ended").exists()
    assert not AuditLog.objects.filter(action="datamgmt.bulk_archive").exists()
    archive = Export.objects.get()
    assert archive.owner == user and archive.status == "succeeded"
    assert archive.parameters == {"archive_of": "conversations.Conversation", "job": job["id"]}
    assert archive.row_counts["conversations_conversation"] == 2


@pytest.mark.django_db(transaction=True)
def test_an_archive_deletes_exactly_what_it_wrote_while_others_write(
    api_client, user, run_jobs, monkeypatch
):
    spam = seed_conversation(user, title="Spam 1")
    late = seed_conversation(user, title="Ham")
    write = bulk._archive_write

    def write_then_another_request_renames(export, queryset):  # type: ignore[no-untyped-def]
        written = write(export, queryset)
        with pg.connect(pg.django_conninfo()) as conn:  # another session, committed now
            conn.execute(
                "UPDATE conversations_conversation SET title = 'Spam late' WHERE id = %s",
                (late.pk,),
            )
            conn.commit()
        return written

    monkeypatch.setattr(bulk, "_archive_write", write_then_another_request_renames)
    job = _queue(
        api_client,
        {"action": "archive", "target": "conversations", "filters": {"title__startswith": "Spam"}},
    )

    assert run_jobs() == ["succeeded"]

    result = Job.objects.get(pk=job["id"]).result
    assert result["counts"]["conversations.Conversation"] == 1
    assert Export.objects.get(pk=result["archive"]).row_counts["conversations_conversation"] == 1
    assert not Conversation.objects.filter(pk=spam.pk).exists()
    # Not in the archive, so not deleted: it matched only after the job's snapshot.
    assert Conversation.objects.get(pk=late.pk).title == "Spam late"


def test_an_archive_left_running_by_a_killed_attempt_is_failed_and_redone(
    api_client, user, run_jobs
):
    from datamgmt.services.exports import export_directory

    spam = [seed_conversation(user, title=f"Spam {n}") for n in range(2)]
    job = _queue(
        api_client,
        {"action": "archive", "target": "conversations", "filters": {"title__startswith": "Spam"}},
    )
    # What a worker killed mid-archive leaves: its export running, a file half written.
    killed = bulk._archive_begin(user, Conversation, job["id"])
    partial = export_directory() / f"{killed.file_name}.partial"
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(b"\x1f\x8b half an archive")

    assert run_jobs() == ["succeeded"]

    killed.refresh_from_db()
    assert killed.status == "failed" and "interrupted" in killed.error
    assert not partial.exists()
    redone = Export.objects.exclude(pk=killed.pk).get()
    assert redone.status == "succeeded" and redone.row_counts["conversations_conversation"] == 2
    assert Job.objects.get(pk=job["id"]).result["archive"] == str(redone.pk)
    assert not Conversation.objects.filter(pk__in=[c.pk for c in spam]).exists()
