"""backup, restore, purge and export_data from the command line."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from conversations.models import Conversation
from datamgmt import age, pg
from datamgmt.models import Backup, RetentionPolicy
from datamgmt.streams import OutputStream

from .conftest import seed_conversation, table_contents

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_backup_then_restore_with_the_commands(seeded, user, tmp_path, monkeypatch, fresh_database):
    monkeypatch.setenv("BACKUP_PASSPHRASE", "command line passphrase")
    full = run(
        "backup",
        "--type",
        "full",
        "--output",
        str(tmp_path),
        "--passphrase-env",
        "BACKUP_PASSPHRASE",
    )
    seed_conversation(user, title="between")
    Conversation.objects.filter(pk=seeded["other_conversation"].pk).delete()
    last = run(
        "backup",
        "--type",
        "differential",
        "--output",
        str(tmp_path),
        "--passphrase-env",
        "BACKUP_PASSPHRASE",
    )
    path = last.strip().splitlines()[-1]
    assert Path(full.strip().splitlines()[-1]).exists() and path.endswith(".tar.zst.age")

    name = "dm_cmd_restore_target"
    try:
        message = run("restore", path, "--passphrase-env", "BACKUP_PASSPHRASE", "--database", name)
        assert "checksums verified" in message
        assert table_contents(pg.django_conninfo(dbname=name)) == table_contents(
            pg.django_conninfo()
        )
    finally:
        pg.database_drop(pg.django_conninfo(dbname="postgres"), name)


def test_a_backup_to_an_age_recipient_restores_only_with_the_identity(
    seeded, tmp_path, fresh_database
):
    secret, public = age.keypair_generate()
    identity = tmp_path / "key.txt"
    identity.write_text(f"# created for a test\n{secret}\n")
    path = (
        run("backup", "--output", str(tmp_path / "b"), "--recipient", public)
        .strip()
        .splitlines()[-1]
    )
    name, target = fresh_database()
    pg.database_drop(pg.django_conninfo(dbname="postgres"), name)

    with pytest.raises(CommandError, match="identity"):
        run("restore", path, "--database", name)
    run("restore", path, "--identity", str(identity), "--database", name)
    try:
        assert (
            table_contents(target)["knowledge_chunk"]
            == table_contents(pg.django_conninfo())["knowledge_chunk"]
        )
    finally:
        pg.database_drop(pg.django_conninfo(dbname="postgres"), name)


def test_ctrl_c_during_a_backup_leaves_no_file(seeded, tmp_path, monkeypatch):
    def interrupted(self, data):
        raise KeyboardInterrupt

    monkeypatch.setattr(OutputStream, "write", interrupted)

    with pytest.raises(CommandError) as stopped:
        run("backup", "--output", str(tmp_path))

    assert stopped.value.returncode == 130
    assert list(tmp_path.iterdir()) == []
    assert Backup.objects.get().status == "failed"


def test_restore_refuses_a_database_that_is_not_empty(seeded, tmp_path):
    path = run("backup", "--output", str(tmp_path)).strip().splitlines()[-1]
    with pytest.raises(CommandError, match="not empty"):
        run("restore", path)


def test_export_data_writes_a_file_of_the_scope(seeded, tmp_path):
    target = tmp_path / "alice.json.gz"
    run(
        "export_data",
        "--scope",
        "user",
        "--user",
        "alice",
        "--format",
        "json",
        "--compression",
        "gzip",
        "--output",
        str(target),
    )

    import gzip

    tables = json.loads(gzip.decompress(target.read_bytes()))["tables"]
    assert {r["title"] for r in tables["conversations_conversation"]} == {"Trip"}


def test_purge_dry_run_counts_and_purge_deletes(seeded, user):
    RetentionPolicy.objects.create(name="old", scope="conversations", age_days=10)
    Conversation.objects.filter(pk=seeded["conversation"].pk).update(
        updated_at=timezone.now() - timedelta(days=11)
    )

    assert "would delete 4 rows" in run("purge", "--dry-run")
    assert Conversation.objects.filter(pk=seeded["conversation"].pk).exists()
    assert "deleted 4 rows" in run("purge")
    assert not Conversation.objects.filter(pk=seeded["conversation"].pk).exists()
