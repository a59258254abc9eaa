"""The admin pages and their actions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from conversations.models import Conversation
from datamgmt.models import Backup, Restore, RetentionPolicy
from datamgmt.services.backups import backup_create, backup_run
from datamgmt.services.restores import restore_run


@pytest.fixture
def admin_client(staff_user) -> Client:
    client = Client()
    client.force_login(staff_user)
    return client


@pytest.mark.django_db(transaction=True)
def test_backups_show_their_chain_and_verification(admin_client, seeded):
    full = backup_run(backup_id=backup_create(type="full", actor=None).pk)
    incremental = backup_run(backup_id=backup_create(type="incremental", actor=None).pk)

    listing = admin_client.get("/admin/datamgmt/backup/")
    assert listing.status_code == 200
    page = admin_client.get(f"/admin/datamgmt/backup/{incremental.pk}/change/").content.decode()
    assert full.file_name in page and incremental.file_name in page
    assert "conversations_message" in page

    response = admin_client.post(
        "/admin/datamgmt/backup/",
        {"action": "verify_by_restoring", "_selected_action": [str(incremental.pk)]},
    )
    assert response.status_code == 302
    restore = Restore.objects.get()
    restore_run(restore_id=restore.pk)
    incremental.refresh_from_db()
    assert incremental.verification == "verified"
    assert Restore.objects.get().result["dropped"] is True


@pytest.mark.django_db(transaction=True)
def test_a_policy_page_previews_and_its_action_queues_the_purge(admin_client, seeded, run_jobs):
    Conversation.objects.filter(pk=seeded["conversation"].pk).update(
        updated_at=timezone.now() - timedelta(days=40)
    )
    response = admin_client.post(
        "/admin/datamgmt/retentionpolicy/add/",
        {"name": "old chats", "scope": "conversations", "age_days": 30, "filters": "{}"},
    )
    assert response.status_code == 302
    policy = RetentionPolicy.objects.get()
    page = admin_client.get(f"/admin/datamgmt/retentionpolicy/{policy.pk}/change/").content.decode()
    assert "conversations.Message" in page

    admin_client.post(
        "/admin/datamgmt/retentionpolicy/",
        {"action": "purge_now", "_selected_action": [str(policy.pk)], "post": "yes"},
    )
    assert Conversation.objects.filter(pk=seeded["conversation"].pk).exists()
    assert run_jobs() == ["succeeded"]
    assert not Conversation.objects.filter(pk=seeded["conversation"].pk).exists()
    assert Conversation.objects.filter(pk=seeded["other_conversation"].pk).exists()


def test_exports_and_restores_lists_render(admin_client, db):
    assert admin_client.get("/admin/datamgmt/export/").status_code == 200
    assert admin_client.get("/admin/datamgmt/restore/").status_code == 200
    assert not Backup.objects.exists()
