"""The operator's buttons in the data-management admin: "Back up now", "Check files" on
selected backups, and a retention policy's "Purge now" behind a confirmation page. All
through the real admin URLs."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.messages import get_messages
from django.test import Client
from django.utils import timezone

from accounts.models import AuditLog, User
from conversations.models import Conversation
from datamgmt import age
from datamgmt.models import Backup, RetentionPolicy, Verification, WorkStatus
from datamgmt.services.backups import BACKUP_HANDLER, MANIFEST_FORMAT, manifest_path
from datamgmt.services.retention_policies import policy_create
from datamgmt.streams import file_sha256
from jobs.models import Job

from .conftest import seed_conversation

pytestmark = pytest.mark.django_db

BACKUPS = "/admin/datamgmt/backup/"
BACKUP_NOW = "/admin/datamgmt/backup/backup-now/"
POLICIES = "/admin/datamgmt/retentionpolicy/"
PASSPHRASE = "tr0ub4dor & 3 horses"


@pytest.fixture
def admin_client(staff_user: User) -> Client:
    client = Client()
    client.force_login(staff_user)
    return client


def _messages(response) -> list[str]:  # type: ignore[no-untyped-def]
    return [str(message) for message in get_messages(response.wsgi_request)]


def _backup_on_disk(*, type: str = "full", parent: Backup | None = None) -> Backup:
    """A finished backup's row, file and manifest (the bytes are not a real dump: the file
    check hashes files against manifests, it does not read them)."""
    directory = Path(settings.DATAMGMT_BACKUP_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    backup = Backup.objects.create(
        type=type,
        status=WorkStatus.SUCCEEDED,
        parent=parent,
        directory=str(directory),
        finished_at=timezone.now(),
    )
    path = directory / f"chatter-{type}-{str(backup.pk)[:8]}.dump"
    path.write_bytes(f"the {type} backup {backup.pk}".encode())
    manifest = {
        "format": MANIFEST_FORMAT,
        "id": str(backup.pk),
        "type": type,
        "file": path.name,
        "sha256": file_sha256(path),
        "schema_version": "v1",
        "parent": None
        if parent is None
        else {"id": str(parent.pk), "file": parent.file_name, "sha256": parent.sha256},
    }
    manifest_path(path).write_text(json.dumps(manifest))
    Backup.objects.filter(pk=backup.pk).update(
        file_name=path.name, sha256=manifest["sha256"], manifest=manifest
    )
    backup.refresh_from_db()
    return backup


# --- "Back up now" ---------------------------------------------------------------------------
def test_back_up_now_queues_the_backup_as_a_job_and_links_to_it(admin_client, staff_user):
    assert BACKUP_NOW in admin_client.get(BACKUPS).content.decode()
    form = admin_client.get(BACKUP_NOW).content.decode()
    assert 'name="type"' in form and 'value="passphrase"' in form
    assert 'value="recipients"' not in form  # none configured

    response = admin_client.post(BACKUP_NOW, {"type": "full", "encryption": "none"})

    assert response.status_code == 302 and response["Location"] == BACKUPS
    backup = Backup.objects.get()
    assert (backup.type, backup.status, backup.encryption) == ("full", "pending", "none")
    assert backup.created_by == staff_user
    job = Job.objects.get()
    assert (job.handler, job.args, job.priority) == (
        BACKUP_HANDLER,
        {"backup_id": str(backup.pk)},
        "high",
    )
    assert backup.job_id == job.pk and job.owner == staff_user
    [message] = _messages(response)
    assert f'href="/admin/datamgmt/backup/{backup.pk}/change/"' in message
    assert f"queued as job {job.pk}" in message
    audit = AuditLog.objects.get(action="datamgmt.backup_requested")
    assert audit.actor == staff_user and audit.target_id == str(backup.pk)
    assert audit.details == {"type": "full", "encryption": "none"}


def test_a_differential_builds_on_the_last_full(admin_client):
    full = _backup_on_disk()

    admin_client.post(BACKUP_NOW, {"type": "differential", "encryption": "none"})

    queued = Backup.objects.exclude(pk=full.pk).get()
    assert queued.type == "differential" and queued.status == "pending"
    assert Job.objects.get().args == {"backup_id": str(queued.pk)}


def test_the_passphrase_is_used_but_never_stored(admin_client):
    response = admin_client.post(
        BACKUP_NOW,
        {
            "type": "full",
            "encryption": "passphrase",
            "passphrase": PASSPHRASE,
            "passphrase_again": PASSPHRASE,
        },
    )

    assert response.status_code == 302
    backup = Backup.objects.get()
    assert backup.encryption == "passphrase"
    # The header opens with the typed passphrase, to the key the job will encrypt with.
    header = io.BytesIO(bytes(backup.encryption_header))
    assert age.file_key_unwrap(header, passphrases=[PASSPHRASE]) == bytes(backup.pending_key)
    secret = PASSPHRASE.encode()
    for field in Backup._meta.concrete_fields:
        value = getattr(backup, field.attname)
        stored = bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode()
        assert secret not in stored, field.name
    assert PASSPHRASE not in json.dumps(list(Job.objects.values("args", "error", "result")))
    audit = list(AuditLog.objects.values("details", "target_repr"))
    assert audit and PASSPHRASE not in json.dumps(audit)


def test_configured_recipients_are_offered_and_used(admin_client, settings):
    secret, public = age.keypair_generate()
    settings.DATAMGMT_BACKUP_RECIPIENTS = [public]
    form = admin_client.get(BACKUP_NOW).content.decode()
    assert 'value="recipients"' in form and public in form

    admin_client.post(BACKUP_NOW, {"type": "full", "encryption": "recipients"})
    admin_client.post(BACKUP_NOW, {"type": "full", "encryption": "none"})

    encrypted, plain = Backup.objects.order_by("created_at")
    assert (encrypted.encryption, plain.encryption) == ("recipients", "none")
    header = io.BytesIO(bytes(encrypted.encryption_header))
    key = age.file_key_unwrap(header, identities=[age.identity_parse(secret)])
    assert key == bytes(encrypted.pending_key)
    assert plain.encryption_header is None


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (
            {"type": "incremental", "encryption": "none"},
            "An incremental backup needs a full backup to build on: make a full one first.",
        ),
        (
            {"type": "differential", "encryption": "none"},
            "A differential backup needs a full backup to build on: make a full one first.",
        ),
        (
            {"type": "full", "encryption": "passphrase", "passphrase": PASSPHRASE},
            "The two passphrases do not match.",
        ),
        ({"type": "full", "encryption": "passphrase"}, "Type the passphrase to encrypt with."),
        (
            {"type": "full", "encryption": "passphrase", "passphrase": "short"},
            "Ensure this value has at least 8 characters (it has 5).",
        ),
        (
            {"type": "full", "encryption": "none", "passphrase": PASSPHRASE},
            "A passphrase is only for passphrase encryption.",
        ),
        ({"type": "full", "encryption": "recipients"}, "Select a valid choice."),
        ({"type": "weekly", "encryption": "none"}, "Select a valid choice."),
    ],
)
def test_a_bad_request_shows_the_error_and_creates_nothing(admin_client, data, error):
    response = admin_client.post(BACKUP_NOW, data)

    assert response.status_code == 400
    page = response.content.decode()
    assert error in page
    assert PASSPHRASE not in page  # never rendered back
    assert not Backup.objects.exists() and not Job.objects.exists()
    assert not AuditLog.objects.filter(action="datamgmt.backup_requested").exists()


def test_back_up_now_is_refused_to_non_staff_and_to_staff_without_the_permission(user, make_user):
    client = Client()
    client.force_login(user)
    for response in (
        client.get(BACKUP_NOW),
        client.post(BACKUP_NOW, {"type": "full", "encryption": "none"}),
    ):
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
    viewer = User.objects.create_user(username="viewer", password="pw-viewer", is_staff=True)
    client.force_login(viewer)
    assert client.post(BACKUP_NOW, {"type": "full", "encryption": "none"}).status_code == 403
    assert not Backup.objects.exists() and not Job.objects.exists()


# --- "Check files" ---------------------------------------------------------------------------
def test_check_files_reports_each_backup_ok_or_what_is_wrong(admin_client):
    full = _backup_on_disk()
    incremental = _backup_on_disk(type="incremental", parent=full)
    damaged = _backup_on_disk()
    with open(Path(damaged.directory) / damaged.file_name, "ab") as handle:
        handle.write(b"!")
    unfinished = Backup.objects.create(type="full")
    selected = [incremental, damaged, unfinished]

    response = admin_client.post(
        BACKUPS,
        {"action": "check_files", "_selected_action": [str(b.pk) for b in selected]},
    )

    assert response.status_code == 302
    # (str(backup) is type and time: the same for the two fulls made in this transaction)
    assert sorted(_messages(response)) == sorted(
        [
            f"{incremental}: OK, 2 file(s) match their manifests ({full.file_name} -> "
            f"{incremental.file_name}).",
            f"{damaged}: {damaged.file_name} does not match its manifest's checksum: damaged "
            "or tampered with.",
            f"{unfinished}: A pending backup has no files to check.",
        ]
    )
    damaged.refresh_from_db()
    incremental.refresh_from_db()
    assert damaged.verification == Verification.FAILED
    assert "does not match" in damaged.verification_message
    assert incremental.verification == Verification.UNVERIFIED  # only a restore verifies


# --- "Purge now" ------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_purge_now_confirms_with_the_preview_then_queues_a_job_per_policy(
    admin_client, user, staff_user, run_jobs
):
    old = [seed_conversation(user, title=f"old {n}") for n in range(2)]
    recent = seed_conversation(user, title="recent")
    Conversation.objects.filter(pk__in=[c.pk for c in old]).update(
        updated_at=timezone.now() - timedelta(days=40)
    )
    policy = policy_create(actor=None, name="old chats", scope="conversations", age_days=30)
    action = {"action": "purge_now", "_selected_action": [str(policy.pk)]}

    confirm = admin_client.post(POLICIES, action)

    assert confirm.status_code == 200
    page = confirm.content.decode().replace("\n", "").replace(" ", "")
    assert "<td>conversations.Conversation</td><td>2</td>" in page
    assert "<td>conversations.Message</td><td>6</td>" in page
    assert "<td><strong>total</strong></td><td><strong>8</strong></td>" in page
    assert 'name="post"value="yes"' in page
    assert Conversation.objects.count() == 3

    outsider = Client()
    outsider.force_login(user)
    refused = outsider.post(POLICIES, {**action, "post": "yes"})
    assert refused.status_code == 302 and refused["Location"].startswith("/admin/login/")
    assert Conversation.objects.count() == 3

    queued = admin_client.post(POLICIES, {**action, "post": "yes"})

    assert queued.status_code == 302
    assert Conversation.objects.count() == 3  # the job purges, not the request
    job = Job.objects.get()
    assert (job.handler, job.args, job.owner) == (
        "datamgmt_policy_purge",
        {"policy_id": str(policy.pk)},
        staff_user,
    )
    [message] = _messages(queued)
    assert message == (
        f'old chats: purge queued as job <a href="/admin/jobs/job/{job.pk}/change/">{job.pk}</a>.'
    )
    # Asked twice while it waits: the same job.
    admin_client.post(POLICIES, {**action, "post": "yes"})
    assert Job.objects.count() == 1

    assert run_jobs() == ["succeeded"]

    assert list(Conversation.objects.values_list("pk", flat=True)) == [recent.pk]
    job.refresh_from_db()
    assert job.result["total"] == 8
    audit = AuditLog.objects.get(action="datamgmt.retention_purged")
    assert audit.actor == staff_user and audit.target_id == str(policy.pk)
    assert audit.details["counts"] == {"conversations.Conversation": 2, "conversations.Message": 6}
    policy.refresh_from_db()
    assert policy.last_result["total"] == 8 and policy.last_run_at is not None
    assert RetentionPolicy.objects.count() == 1
