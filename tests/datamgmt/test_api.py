"""Backups, restores, retention policies and bulk operations over the API."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import AuditLog
from conversations.models import Conversation, Message
from core.models import Event
from datamgmt import pg
from datamgmt.models import Backup, Export, Restore
from datamgmt.services.backups import backup_run
from datamgmt.services.restores import restore_run
from jobs.models import Job
from knowledge.models import Chunk, Document

from .conftest import seed_conversation, table_contents


def test_backups_are_refused_to_non_staff(api_client, db):
    assert api_client.get("/api/v1/backups/").status_code == 403
    response = api_client.post("/api/v1/backups/", {"type": "full"}, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert api_client.get("/api/v1/retention-policies/").status_code == 403
    assert not Backup.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "weekly"}, "type"),
        ({"type": "full", "recipients": ["age1notakey"]}, "recipients"),
        ({"type": "full", "passphrase": "pw", "recipients": []}, "passphrase"),
        ({"type": "full", "extra": 1}, "extra"),
    ],
)
def test_bad_backup_requests_are_400s(staff_client, db, body, field):
    response = staff_client.post("/api/v1/backups/", body, format="json")
    assert response.status_code == 400
    assert field in str(response.json()["error"]["details"])


def test_an_incremental_without_a_full_is_a_400(staff_client, db):
    response = staff_client.post("/api/v1/backups/", {"type": "incremental"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "no_full_backup"


@pytest.mark.django_db(transaction=True)
def test_a_backup_is_a_job_and_restores_into_a_new_database(staff_client, seeded, fresh_database):
    response = staff_client.post(
        "/api/v1/backups/", {"type": "full", "passphrase": "backup passphrase"}, format="json"
    )
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "pending" and body["encryption"] == "passphrase"
    assert Job.objects.get(pk=body["job"]).handler == "datamgmt_backup"
    backup_run(backup_id=body["id"])
    seed_conversation(seeded["conversation"].owner, title="after the full")
    incremental = staff_client.post(
        "/api/v1/backups/",
        {"type": "incremental", "passphrase": "backup passphrase"},
        format="json",
    ).json()
    backup_run(backup_id=incremental["id"])

    detail = staff_client.get(f"/api/v1/backups/{incremental['id']}/").json()
    assert detail["chain"] == [body["id"], incremental["id"]]
    assert detail["parent"] == body["id"]
    assert detail["row_counts"]["conversations_conversation"] == 3
    assert not Backup.objects.filter(pending_key__isnull=False).exists()

    wrong = staff_client.post(
        f"/api/v1/backups/{incremental['id']}/restore/", {"passphrase": "wrong one"}, format="json"
    )
    assert wrong.status_code == 400
    assert wrong.json()["error"]["code"] == "wrong_key"

    name = f"dm_api_{incremental['id'][:8]}"
    restore = staff_client.post(
        f"/api/v1/backups/{incremental['id']}/restore/",
        {"passphrase": "backup passphrase", "target_database": name},
        format="json",
    )
    assert restore.status_code == 202, restore.json()
    try:
        restore_run(restore_id=restore.json()["id"])
        done = staff_client.get(f"/api/v1/restores/{restore.json()['id']}/").json()
        assert done["status"] == "succeeded"
        assert done["result"]["verified"] is True
        restored = table_contents(pg.django_conninfo(dbname=name))
        assert (
            restored["conversations_conversation"]
            == table_contents(pg.django_conninfo())["conversations_conversation"]
        )
        assert (
            staff_client.get(f"/api/v1/backups/{incremental['id']}/").json()["verification"]
            == "verified"
        )
    finally:
        pg.database_drop(pg.django_conninfo(dbname="postgres"), name)
    assert not Restore.objects.filter(pending_key__isnull=False).exists()


def _age(model, field, days, **filters):
    model.objects.filter(**filters).update(**{field: timezone.now() - timedelta(days=days)})


@pytest.mark.django_db(transaction=True)
def test_retention_preview_counts_what_the_purge_job_deletes(staff_client, seeded, user, run_jobs):
    old = seed_conversation(user, title="Old one", messages=5)
    _age(Conversation, "updated_at", 100, pk=old.pk)
    _age(Conversation, "updated_at", 100, pk=seeded["other_conversation"].pk)
    with pg.connect(pg.django_conninfo()) as conn:
        conn.execute(
            "INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, checkpoint, metadata) "
            "VALUES (%s, '', 'c1', '{}', '{}'), (%s, '', 'c2', '{}', '{}')",
            (str(old.pk), str(seeded["conversation"].pk)),
        )
        conn.commit()
    created = staff_client.post(
        "/api/v1/retention-policies/",
        {
            "name": "alice's old chats",
            "scope": "conversations",
            "age_days": 30,
            "filters": {"owner": user.pk},
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    policy = created.json()["id"]

    preview = staff_client.get(f"/api/v1/retention-policies/{policy}/preview/").json()
    assert preview["dry_run"] is True
    assert preview["counts"]["conversations.Conversation"] == 1
    assert preview["counts"]["conversations.Message"] == 5
    assert preview["counts"]["langgraph.checkpoints"] == 1
    assert Conversation.objects.filter(pk=old.pk).exists()

    unconfirmed = staff_client.post(
        f"/api/v1/retention-policies/{policy}/purge/", {}, format="json"
    )
    assert unconfirmed.status_code == 200 and unconfirmed.json() == preview
    assert Conversation.objects.filter(pk=old.pk).exists() and not Job.objects.exists()

    purged = confirmed(staff_client, run_jobs, f"/api/v1/retention-policies/{policy}/purge/", {})
    assert purged["dry_run"] is False
    assert purged["counts"] == preview["counts"]
    assert not Conversation.objects.filter(pk=old.pk).exists()
    assert Conversation.objects.filter(
        pk=seeded["other_conversation"].pk
    ).exists()  # bob's: filtered out
    audit = AuditLog.objects.get(action="datamgmt.retention_purged")
    assert audit.actor.is_staff and audit.details == purged
    ended = Event.objects.filter(type="conversation.ended")
    assert [(e.data["id"], e.data["reason"], e.owner_id) for e in ended] == [
        (str(old.pk), "deleted", user.pk)
    ]
    with pg.connect(pg.django_conninfo()) as conn:
        # Only these two threads: other tests' turns leave checkpoints of their own.
        left = conn.execute(
            "SELECT thread_id FROM checkpoints WHERE thread_id = ANY(%s)",
            ([str(old.pk), str(seeded["conversation"].pk)],),
        ).fetchall()
        assert [row[0] for row in left] == [str(seeded["conversation"].pk)]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "scope": "galaxies", "age_days": 3}, "scope"),
        ({"name": "x", "scope": "jobs", "age_days": -1}, "age_days"),
        ({"name": "x", "scope": "jobs", "age_days": 3, "filters": {"nope": 1}}, "filters"),
        ({"name": "x", "scope": "jobs", "age_days": "3"}, "age_days"),
    ],
)
def test_bad_policies_are_400s(staff_client, db, body, field):
    response = staff_client.post("/api/v1/retention-policies/", body, format="json")
    assert response.status_code == 400
    assert field in str(response.json()["error"]["details"])


def test_the_daily_purge_is_queued_by_maintenance_once_a_day(db):
    from datamgmt.models import RetentionPolicy
    from datamgmt.services.retention import PURGE_HANDLER, retention_due_enqueue

    RetentionPolicy.objects.create(name="jobs", scope="jobs", age_days=30, auto_purge=True)
    assert retention_due_enqueue()["queued"] is True
    assert retention_due_enqueue()["queued"] is False
    assert Job.objects.filter(handler=PURGE_HANDLER).count() == 1


def confirmed(client, run_jobs, path, body):  # type: ignore[no-untyped-def]
    """POST a confirmed operation: 202 with its job, nothing done until the job runs; the
    job's result, read through the jobs API."""
    queued = client.post(path, {**body, "confirm": True}, format="json")
    assert queued.status_code == 202, queued.json()
    job = queued.json()
    assert job["status"] == "pending" and job["result"] is None
    assert queued["Location"] == job["url"] == f"http://testserver/api/v1/jobs/{job['id']}/"
    assert run_jobs() == ["succeeded"]
    return client.get(f"/api/v1/jobs/{job['id']}/").json()["result"]


@pytest.mark.django_db(transaction=True)
def test_bulk_operations_are_dry_runs_until_confirmed_then_jobs(
    api_client, other_client, staff_client, seeded, user, run_jobs
):
    seed_conversation(user, title="Spam 1")
    seed_conversation(user, title="Spam 2")
    body = {
        "action": "archive",
        "target": "conversations",
        "filters": {"title__startswith": "Spam"},
    }

    dry = api_client.post("/api/v1/bulk-operations/", body, format="json")
    assert dry.status_code == 200
    assert dry.json() == {
        "dry_run": True,
        "action": "archive",
        "target": "conversations",
        "counts": {"conversations.Conversation": 2, "conversations.Message": 6},
    }
    assert Conversation.objects.filter(title__startswith="Spam").count() == 2
    # Bob's filter matches nothing of Alice's.
    assert other_client.post("/api/v1/bulk-operations/", body, format="json").json()["counts"] == {}
    assert not Job.objects.exists()

    done = confirmed(api_client, run_jobs, "/api/v1/bulk-operations/", body)
    assert done["dry_run"] is False
    assert not Conversation.objects.filter(title__startswith="Spam").exists()
    archive = Export.objects.get(pk=done["archive"])
    assert archive.owner == user and archive.row_counts["conversations_message"] == 6
    assert archive.status == "succeeded"
    audit = AuditLog.objects.get(action="datamgmt.bulk_archive")
    assert audit.actor == user and audit.details == {**done, "filters": body["filters"]}
    # Webhook subscribers hear of each archived conversation, with its message count.
    ended = Event.objects.filter(type="conversation.ended").order_by("data__title")
    assert [(e.data["title"], e.data["reason"], e.data["message_count"]) for e in ended] == [
        ("Spam 1", "archived", 3),
        ("Spam 2", "archived", 3),
    ]

    reassign = {
        "action": "reassign",
        "target": "documents",
        "filters": {"title": "Guide"},
        "to_user": "bob",
    }
    refused = api_client.post(
        "/api/v1/bulk-operations/", {**reassign, "confirm": True}, format="json"
    )
    assert refused.status_code == 403
    moved = confirmed(staff_client, run_jobs, "/api/v1/bulk-operations/", reassign)
    assert moved == {
        "dry_run": False,
        "action": "reassign",
        "target": "documents",
        "counts": {"knowledge.Document": 1},
        "to_user": "bob",
    }
    assert Document.objects.get(pk=seeded["document"].pk).owner.username == "bob"

    delete = {"action": "delete", "target": "documents", "filters": {"title": "Bob doc"}}
    deleted = confirmed(staff_client, run_jobs, "/api/v1/bulk-operations/", delete)
    assert deleted["counts"]["knowledge.Chunk"] == 2
    assert not Chunk.objects.filter(document_id=seeded["other_document"].pk).exists()
    assert Message.objects.filter(conversation=seeded["conversation"]).count() == 3


def test_a_bad_bulk_operation_is_a_400(api_client, db):
    response = api_client.post(
        "/api/v1/bulk-operations/", {"action": "explode", "target": "conversations"}, format="json"
    )
    assert response.status_code == 400
    assert "action" in response.json()["error"]["details"]


@pytest.mark.django_db(transaction=True)
def test_an_api_restore_of_a_tampered_chain_fails_and_drops_its_database(staff_client, seeded):
    from pathlib import Path

    import psycopg

    backup = backup_run(
        backup_id=staff_client.post("/api/v1/backups/", {"type": "full"}, format="json").json()[
            "id"
        ]
    )
    path = Path(backup.directory) / backup.file_name
    restore = staff_client.post(
        f"/api/v1/backups/{backup.pk}/restore/",
        {"target_database": "dm_api_tampered"},
        format="json",
    )
    assert restore.status_code == 202
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))

    with pytest.raises(Exception, match="checksum"):
        restore_run(restore_id=restore.json()["id"])

    assert (
        staff_client.get(f"/api/v1/restores/{restore.json()['id']}/").json()["status"] == "failed"
    )
    assert staff_client.get(f"/api/v1/backups/{backup.pk}/").json()["verification"] == "failed"
    with psycopg.connect(pg.django_conninfo(dbname="postgres")) as conn:
        assert (
            conn.execute(
                "SELECT count(*) FROM pg_database WHERE datname = 'dm_api_tampered'"
            ).fetchone()[0]
            == 0
        )


def test_a_policy_name_taken_is_a_400_on_create_and_rename(staff_client, db):
    body = {"scope": "jobs", "age_days": 30}
    first = staff_client.post("/api/v1/retention-policies/", {**body, "name": "a"}, format="json")
    second = staff_client.post("/api/v1/retention-policies/", {**body, "name": "b"}, format="json")
    again = staff_client.post("/api/v1/retention-policies/", {**body, "name": "a"}, format="json")
    renamed = staff_client.patch(
        f"/api/v1/retention-policies/{second.json()['id']}/", {"name": "a"}, format="json"
    )
    kept = staff_client.patch(
        f"/api/v1/retention-policies/{first.json()['id']}/", {"name": "a"}, format="json"
    )

    assert (first.status_code, second.status_code) == (201, 201)
    for refused in (again, renamed):
        assert refused.status_code == 400, refused.content
        assert list(refused.json()["error"]["details"]) == ["name"]
    assert kept.status_code == 200


@pytest.mark.django_db(transaction=True)
def test_a_purge_job_whose_policy_is_gone_fails_at_once(staff_client, run_jobs):
    from datamgmt.models import RetentionPolicy

    policy = RetentionPolicy.objects.create(name="old jobs", scope="jobs", age_days=30)
    queued = staff_client.post(
        f"/api/v1/retention-policies/{policy.pk}/purge/", {"confirm": True}, format="json"
    )
    assert queued.status_code == 202
    policy.delete()

    assert run_jobs() == ["failed"]
    assert "is gone" in Job.objects.get(pk=queued.json()["id"]).error
    assert not AuditLog.objects.filter(action="datamgmt.retention_purged").exists()
