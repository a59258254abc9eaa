"""Full, incremental and differential backups restore into fresh databases exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from accounts.models import User
from conversations.models import Conversation, Message
from datamgmt import pg
from datamgmt.models import Backup, BackupType
from datamgmt.services.backups import BackupRefused, backup_chain, backup_create, backup_run
from datamgmt.services.restores import chain_resolve, chain_restore
from knowledge.models import Chunk, Document

from .conftest import seed_conversation, seed_document, table_contents

pytestmark = pytest.mark.django_db(transaction=True)


def make_backup(kind: str, **options) -> tuple[Backup, Path]:
    backup = backup_run(backup_id=backup_create(type=kind, actor=None, **options).pk)
    return backup, Path(backup.directory) / backup.file_name


def test_full_incremental_differential_chains_restore_exactly(seeded, user, fresh_database):
    source = pg.django_conninfo()
    full, full_path = make_backup("full")
    states = {"full": table_contents(source)}

    # Inserts, updates (ORM and bulk), deletes with Django's cascades.
    seed_conversation(user, title="New after full", messages=4)
    Message.objects.filter(conversation=seeded["conversation"]).update(content="edited")
    seeded["other_document"].delete()  # its chunks go with it
    User.objects.create_user("carol")
    incremental1, incremental1_path = make_backup("incremental")
    states["incremental1"] = table_contents(source)

    Conversation.objects.filter(title="New after full").delete()
    seed_document(user, title="Later", chunks=3)
    Chunk.objects.filter(document=seeded["document"], position=0).update(content="rewritten")
    differential, differential_path = make_backup("differential")
    states["differential"] = table_contents(source)

    Message.objects.filter(position=2).delete()
    User.objects.filter(username="carol").update(first_name="Carol")
    incremental2, incremental2_path = make_backup("incremental")
    states["incremental2"] = table_contents(source)

    assert incremental1.parent_id == full.pk
    assert differential.parent_id == full.pk
    assert incremental2.parent_id == differential.pk
    assert [b.pk for b in backup_chain(backup=incremental2)] == [
        full.pk,
        differential.pk,
        incremental2.pk,
    ]
    assert incremental1.manifest["changes"]["knowledge_chunk"]["keys"] == 2
    assert incremental1.manifest["changes"]["knowledge_chunk"]["rows"] == 0  # deleted

    for state, path in [
        ("full", full_path),
        ("incremental1", incremental1_path),
        ("differential", differential_path),
        ("incremental2", incremental2_path),
    ]:
        _, target = fresh_database()
        result = chain_restore(path, target_info=target)
        assert result["verified"] is True
        restored = table_contents(target)
        assert restored == states[state], state
        assert sum(len(rows) for rows in restored.values()) > 20


def test_the_chain_of_a_file_is_found_from_the_manifests_alone(seeded):
    _full, full_path = make_backup("full")
    _, inc1 = make_backup("incremental")
    _, diff = make_backup("differential")
    _, inc2 = make_backup("incremental")

    assert [link.path for link in chain_resolve(inc2)] == [full_path, diff, inc2]
    assert [link.path for link in chain_resolve(inc1)] == [full_path, inc1]
    assert [link.path for link in chain_resolve(full_path)] == [full_path]


def test_a_missing_parent_is_refused_and_nothing_is_restored(seeded, fresh_database):
    _, full_path = make_backup("full")
    _, inc = make_backup("incremental")
    full_path.unlink()
    _, target = fresh_database()

    with pytest.raises(BackupRefused, match="chain is broken") as refused:
        chain_restore(inc, target_info=target)

    assert refused.value.code == "broken_chain"
    assert table_contents(target) == {}


def test_a_tampered_file_is_refused_and_nothing_is_restored(seeded, fresh_database):
    _, full_path = make_backup("full")
    data = bytearray(full_path.read_bytes())
    data[len(data) // 2] ^= 1
    full_path.write_bytes(bytes(data))
    _, target = fresh_database()

    with pytest.raises(BackupRefused) as refused:
        chain_restore(full_path, target_info=target)

    assert refused.value.code == "checksum_mismatch"
    assert table_contents(target) == {}


def test_a_schema_from_another_version_is_refused(seeded, fresh_database):
    import json

    _, full_path = make_backup("full")
    side = full_path.with_name(full_path.name + ".manifest.json")
    manifest = json.loads(side.read_text())
    manifest["schema_version"] = "0" * 64
    side.write_text(json.dumps(manifest))
    _, target = fresh_database()

    with pytest.raises(BackupRefused) as refused:
        chain_restore(full_path, target_info=target)

    assert refused.value.code == "schema_version_mismatch"
    assert table_contents(target) == {}


def test_an_encrypted_chain_needs_its_passphrase(seeded, fresh_database):
    _, _full_path = make_backup("full", passphrase="correct horse")
    _, inc = make_backup("incremental", passphrase="correct horse")
    _, target = fresh_database()

    with pytest.raises(BackupRefused) as refused:
        chain_restore(inc, target_info=target, passphrases=["wrong"])
    assert refused.value.code == "wrong_key"
    assert table_contents(target) == {}

    chain_restore(inc, target_info=target, passphrases=["correct horse"])
    assert table_contents(target) == table_contents(pg.django_conninfo())


def test_a_full_backup_decrypted_is_a_pg_dump_archive(seeded, fresh_database):
    import subprocess

    import pyrage

    _, path = make_backup("full", passphrase="pw")
    plain = path.with_name("plain.dump")
    plain.write_bytes(pyrage.passphrase.decrypt(path.read_bytes(), "pw"))
    _name, target = fresh_database()

    listing = subprocess.run(
        [pg.pg_binary("pg_restore"), "--list", str(plain)], capture_output=True, check=True
    )
    assert b"conversations_message" in listing.stdout
    env = pg.libpq_env(target)
    subprocess.run(
        [
            pg.pg_binary("pg_restore"),
            "--no-owner",
            f"--dbname={env.pop('_CHATTER_CONNINFO')}",
            str(plain),
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    restored = table_contents(target)
    assert (
        restored["conversations_message"]
        == table_contents(pg.django_conninfo())["conversations_message"]
    )


def test_an_incremental_needs_a_full_backup_first(db):
    with pytest.raises(BackupRefused) as refused:
        backup_create(type=BackupType.INCREMENTAL, actor=None)
    assert refused.value.code == "no_full_backup"


def test_deleted_and_recreated_rows_restore_as_last_seen(seeded, user, fresh_database):
    make_backup("full")
    document = Document.objects.get(pk=seeded["document"].pk)
    document.delete()
    seed_document(user, title="Guide", chunks=1)
    _, inc = make_backup("incremental")
    _, target = fresh_database()

    chain_restore(inc, target_info=target)

    assert table_contents(target) == table_contents(pg.django_conninfo())


def test_one_backup_at_a_time(seeded):
    from core.errors import Conflict

    backup = backup_create(type="full", actor=None)
    with pg.backup_lock(pg.django_conninfo()) as held:
        assert held
        with pytest.raises(Conflict):
            backup_run(backup_id=backup.pk)
    backup.refresh_from_db()
    assert backup.status == "failed" and "Another backup" in backup.error
