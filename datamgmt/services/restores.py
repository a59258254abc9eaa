"""Restore the chain that ends in a backup file into an empty database, then verify it.

Everything that can be checked before the first write is checked first (every file of the
chain present, its sha256 the one its manifest and its child recorded, the types in order,
the schema version this Chatter's, each file's key opening it); a failure after that (a
file damaged past what a checksum saw, a checksum that does not match the restored data)
drops what was restored, so a refused restore leaves the target as it was: empty.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from django.db import transaction
from django.utils import timezone
from psycopg import sql

from accounts.models import User
from accounts.services import log_action
from core.errors import ApplicationError, Conflict
from datamgmt import age, pg
from datamgmt.models import Backup, Encryption, Restore, WorkStatus
from datamgmt.services.backups import (
    MANIFEST_FORMAT,
    BackupRefused,
    backup_verification_record,
    manifest_path,
)
from datamgmt.streams import file_sha256, open_input

Progress = Callable[[int, int, str], None]
RESTORE_HANDLER = "datamgmt_restore"


@dataclass
class ChainLink:
    path: Path
    manifest: dict[str, Any]


def code_schema_version() -> tuple[str, list[str]]:
    """The schema version of this code: every migration it has."""
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(None, ignore_no_migrations=True)
    names = sorted(f"{app}.{name}" for app, name in loader.disk_migrations)
    return pg.schema_version(names), names


def _manifest_read(path: Path) -> dict[str, Any]:
    side = manifest_path(path)
    if not path.exists():
        raise BackupRefused(f"Backup file {path} does not exist.", code="broken_chain")
    if not side.exists():
        raise BackupRefused(
            f"The manifest of {path.name} ({side.name}) is missing.", code="broken_chain"
        )
    try:
        manifest = json.loads(side.read_text())
    except ValueError as exc:
        raise BackupRefused(
            f"The manifest {side.name} is not valid JSON.", code="broken_chain"
        ) from exc
    if manifest.get("format") != MANIFEST_FORMAT or manifest.get("file") != path.name:
        raise BackupRefused(f"{side.name} is not the manifest of {path.name}.", code="broken_chain")
    return manifest


def chain_resolve(path: Path, *, verify_files: bool = True) -> list[ChainLink]:
    """The chain that ends in ``path``, the full first, checked link by link."""
    links = [ChainLink(path, _manifest_read(path))]
    while links[-1].manifest.get("type") != "full":
        child = links[-1]
        parent = child.manifest.get("parent") or {}
        if not parent.get("file"):
            raise BackupRefused(f"{child.path.name} names no parent backup.", code="broken_chain")
        parent_path = child.path.with_name(parent["file"])
        if not parent_path.exists():
            raise BackupRefused(
                f"The chain is broken: {parent['file']} (the parent of {child.path.name}) is missing.",
                code="broken_chain",
            )
        link = ChainLink(parent_path, _manifest_read(parent_path))
        if link.manifest.get("sha256") != parent.get("sha256") or link.manifest.get(
            "id"
        ) != parent.get("id"):
            raise BackupRefused(
                f"The chain is broken: {parent['file']} is not the backup {child.path.name} was made on.",
                code="broken_chain",
            )
        if child.manifest["type"] == "differential" and link.manifest.get("type") != "full":
            raise BackupRefused(
                "A differential's parent must be a full backup.", code="broken_chain"
            )
        if len(links) > 10_000:
            raise BackupRefused("The chain loops.", code="broken_chain")
        links.append(link)
    links.reverse()
    if verify_files:
        for link in links:
            if file_sha256(link.path) != link.manifest.get("sha256"):
                raise BackupRefused(
                    f"{link.path.name} does not match its manifest's checksum: damaged or tampered with.",
                    code="checksum_mismatch",
                )
    versions = {link.manifest.get("schema_version") for link in links}
    if len(versions) != 1:
        raise BackupRefused("The chain mixes schema versions.", code="broken_chain")
    return links


def backup_files_check(*, backup: Backup) -> list[str]:
    """Hash every file of the chain that ends in ``backup`` against its manifest, without
    restoring: the files checked, the full first. A missing or damaged file raises
    BackupRefused and is recorded as a failed verification (a success records nothing:
    "verified" means restored and compared, which only a restore proves)."""
    if backup.status != WorkStatus.SUCCEEDED or not backup.file_name:
        raise Conflict(f"A {backup.status} backup has no files to check.", code="backup_not_ready")
    try:
        links = chain_resolve(Path(backup.directory) / backup.file_name)
    except BackupRefused as exc:
        backup_verification_record(backup=backup, ok=False, message=exc.message)
        raise
    return [link.path.name for link in links]


def chain_keys(
    links: list[ChainLink],
    *,
    passphrases: list[str] | None = None,
    identities: list[bytes] | None = None,
) -> list[bytes | None]:
    """Each file's age key, found now: a wrong passphrase is refused before anything is written."""
    keys: list[bytes | None] = []
    for link in links:
        with open(link.path, "rb") as handle:
            if not age.is_age(handle.read(32)):
                keys.append(None)
                continue
            handle.seek(0)
            try:
                keys.append(
                    age.file_key_unwrap(handle, passphrases=passphrases, identities=identities)
                )
            except age.WrongKey as exc:
                raise BackupRefused(f"{link.path.name}: {exc}.", code="wrong_key") from exc
            except age.AgeError as exc:
                raise BackupRefused(f"{link.path.name}: {exc}.", code="checksum_mismatch") from exc
    return keys


def _pg_restore(link: ChainLink, key: bytes | None, target_info: str) -> None:
    env = pg.libpq_env(target_info)
    dbname = env.pop("_CHATTER_CONNINFO")
    process = subprocess.Popen(
        [
            pg.pg_binary("pg_restore"),
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--single-transaction",
            f"--dbname={dbname}",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    stderr: list[bytes] = []
    reader = threading.Thread(target=lambda: stderr.append(process.stderr.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    source = open_input(link.path, file_key=key)
    try:
        while block := source.read(1 << 20):
            process.stdin.write(block)  # type: ignore[union-attr]
        process.stdin.close()  # type: ignore[union-attr]
    except BrokenPipeError:
        pass
    except BaseException:
        process.kill()
        process.wait()
        raise
    finally:
        source.close()
    code = process.wait()
    reader.join()
    process.stderr.close()  # type: ignore[union-attr]
    if code != 0:
        raise pg.DatabaseToolError(
            f"pg_restore failed ({code}): {b''.join(stderr).decode(errors='replace')[:1500]}"
        )


def _apply_changes(link: ChainLink, key: bytes | None, conn: psycopg.Connection) -> None:
    """Apply one incremental or differential in one transaction: per table, delete the
    changed keys, then copy in their rows as of that backup."""
    by_name = {t.name: t for t in pg.tables(conn)}
    source = open_input(link.path, compression="zstd", file_key=key)
    try:
        with conn.transaction(), tarfile.open(fileobj=source, mode="r|") as tar:
            conn.execute("SET CONSTRAINTS ALL DEFERRED")
            for member in tar:
                if member.name == "manifest.json":
                    continue
                name, _, part = member.name.removeprefix("tables/").rpartition(".")
                table = by_name.get(name)
                if table is None:
                    raise BackupRefused(
                        f"{link.path.name} changes {name}, a table this database lacks.",
                        code="schema_mismatch",
                    )
                data = tar.extractfile(member)
                assert data is not None
                change = link.manifest["changes"][name]
                ident = sql.Identifier(name)
                if part == "keys":
                    if change["whole"]:
                        conn.execute(sql.SQL("DELETE FROM {}").format(ident))
                        continue
                    conn.execute(
                        sql.SQL(
                            "CREATE TEMP TABLE datamgmt_keys ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA"
                        ).format(pg.key_list(table), ident)
                    )
                    with conn.cursor().copy("COPY datamgmt_keys FROM STDIN") as copy:
                        while block := data.read(1 << 20):
                            copy.write(block)
                    match = sql.SQL(" AND ").join(
                        sql.SQL("t.{c} = k.{c}").format(c=sql.Identifier(c))
                        for c, _ in table.primary_key
                    )
                    conn.execute(
                        sql.SQL("DELETE FROM {} t USING datamgmt_keys k WHERE {}").format(
                            ident, match
                        )
                    )
                    conn.execute("DROP TABLE datamgmt_keys")
                elif part == "rows":
                    with conn.cursor().copy(
                        sql.SQL("COPY {} ({}) FROM STDIN").format(ident, pg.column_list(table))
                    ) as copy:
                        while block := data.read(1 << 20):
                            copy.write(block)
            for name, value in (link.manifest.get("sequences") or {}).items():
                conn.execute(
                    "SELECT setval(%s::regclass, %s, true)",
                    (sql.Identifier(name).as_string(conn), value),
                )
    finally:
        source.close()


def verify(conn: psycopg.Connection, manifest: dict[str, Any]) -> list[str]:
    """Tables whose rows or checksum differ from ``manifest``'s (empty: all equal)."""
    found = pg.checksums(conn, pg.tables(conn))
    expected = manifest.get("tables") or {}
    return sorted(
        name for name in set(found) | set(expected) if found.get(name) != expected.get(name)
    )


def chain_restore(
    path: Path,
    *,
    target_info: str,
    created_database: tuple[str, str] | None = None,
    passphrases: list[str] | None = None,
    identities: list[bytes] | None = None,
    keys: list[bytes | None] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Restore the chain ending in ``path`` into the empty database at ``target_info``.

    ``created_database`` (server conninfo, name): a database made for this restore, dropped
    if it fails; otherwise a failure empties the target's schema again.
    """
    report = progress or (lambda done, total, message: None)
    links = chain_resolve(path)
    version, _ = code_schema_version()
    if links[-1].manifest.get("schema_version") != version:
        raise BackupRefused(
            "This backup's schema version is not this Chatter's: restore it with the Chatter "
            f"version that made it ({links[-1].manifest.get('chatter_version')}), then migrate.",
            code="schema_version_mismatch",
        )
    if keys is None:
        keys = chain_keys(links, passphrases=passphrases, identities=identities)
    with pg.connect(target_info) as conn:
        if not pg.database_is_empty(conn):
            raise BackupRefused(
                "The target database is not empty: restore into an empty one.",
                code="target_not_empty",
            )
    steps = len(links) + 1
    try:
        report(0, steps, f"pg_restore {links[0].path.name}")
        _pg_restore(links[0], keys[0], target_info)
        with pg.connect(target_info) as conn:
            for index, (link, key) in enumerate(zip(links[1:], keys[1:], strict=True), start=1):
                report(index, steps, f"apply {link.path.name}")
                _apply_changes(link, key, conn)
            # The triggers logged the restore's own writes: this database's chain starts fresh.
            conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(pg.CHANGE_TABLE)))
            conn.commit()
            report(steps - 1, steps, "verify checksums")
            mismatched = verify(conn, links[-1].manifest)
            if mismatched:
                raise BackupRefused(
                    "The restored data does not match the backup's checksums: "
                    + ", ".join(mismatched),
                    code="verification_failed",
                )
            counts = {name: entry["rows"] for name, entry in links[-1].manifest["tables"].items()}
    except BaseException:
        if created_database is not None:
            pg.database_drop(*created_database)
        else:
            with pg.connect(target_info) as conn:
                pg.schema_reset(conn)
        raise
    report(steps, steps, "done")
    return {
        "chain": [link.path.name for link in links],
        "tables": len(counts),
        "rows": sum(counts.values()),
        "verified": True,
    }


# --- the API's restore: into a new database on the same server, as a job ------------------
def _default_target(backup: Backup) -> str:
    return f"chatter_restore_{timezone.now():%Y%m%d%H%M%S}_{str(backup.pk)[:8]}"


def restore_request(
    *,
    backup: Backup,
    actor: User,
    passphrase: str | None = None,
    target_database: str | None = None,
    verify_only: bool = False,
) -> Restore:
    """Check the chain and the passphrase now; the job restores into a new database
    (``verify_only``: a scratch one, dropped once the checksums have been compared)."""
    if backup.status != WorkStatus.SUCCEEDED:
        raise Conflict(f"A {backup.status} backup cannot be restored.", code="backup_not_ready")
    if backup.encryption == Encryption.RECIPIENTS:
        raise BackupRefused(
            "This backup is encrypted to the operator's age keys, which the server does not "
            "hold: restore it with `manage.py restore FILE --identity KEYFILE`.",
            code="identity_required",
        )
    if backup.encryption == Encryption.PASSPHRASE and not passphrase:
        raise ApplicationError(
            "This backup is encrypted: give its passphrase.",
            code="passphrase_required",
            details={"passphrase": ["Required for an encrypted backup."]},
        )
    target = target_database or _default_target(backup)
    # Hashing every file is the job's (chain_restore checks them all again before writing).
    links = chain_resolve(Path(backup.directory) / backup.file_name, verify_files=False)
    keys = chain_keys(links, passphrases=[passphrase] if passphrase else None)
    packed = json.dumps([k.hex() if k else None for k in keys]).encode()
    from jobs.services import enqueue

    with transaction.atomic():
        restore = Restore.objects.create(
            backup=backup,
            chain=[link.path.name for link in links],
            target_database=target,
            pending_key=packed,
            created_by=actor,
            result={"verify_only": verify_only},
        )
        job = enqueue(
            RESTORE_HANDLER,
            args={"restore_id": str(restore.pk)},
            priority="high",
            owner=actor,
            timeout=3600,
            max_attempts=1,
        )
        Restore.objects.filter(pk=restore.pk).update(job=job)
        log_action(
            actor=actor,
            action="datamgmt.restore_requested",
            target=restore,
            details={"backup": str(backup.pk), "database": target},
        )
    restore.refresh_from_db()
    return restore


def restore_run(*, restore_id: str, progress: Progress | None = None) -> Restore:
    claimed = Restore.objects.filter(pk=restore_id, status=WorkStatus.PENDING).update(
        status=WorkStatus.RUNNING
    )
    restore = Restore.objects.select_related("backup").get(pk=restore_id)
    if not claimed:
        raise Conflict(f"Restore {restore_id} is {restore.status}.", code="not_pending")
    keys = [
        bytes.fromhex(k) if k else None for k in json.loads(bytes(restore.pending_key or b"[]"))
    ]
    server = pg.django_conninfo(dbname="postgres")
    backup = restore.backup
    created = False
    try:
        pg.database_create(server, restore.target_database)
        created = True
        result = chain_restore(
            Path(backup.directory) / backup.file_name,
            target_info=pg.django_conninfo(dbname=restore.target_database),
            created_database=(server, restore.target_database),
            keys=keys,
            progress=progress,
        )
    except BaseException as exc:
        if created:  # refused before its first write (a checksum): still ours to drop
            pg.database_drop(server, restore.target_database)
        Restore.objects.filter(pk=restore_id).update(
            status=WorkStatus.FAILED,
            error=f"{exc}"[:2000],
            pending_key=None,
            finished_at=timezone.now(),
        )
        if isinstance(exc, BackupRefused) and exc.code in (
            "verification_failed",
            "checksum_mismatch",
        ):
            backup_verification_record(backup=backup, ok=False, message=str(exc))
        raise
    if restore.result.get("verify_only"):
        pg.database_drop(server, restore.target_database)
        result["dropped"] = True
    Restore.objects.filter(pk=restore_id).update(
        status=WorkStatus.SUCCEEDED, result=result, pending_key=None, finished_at=timezone.now()
    )
    backup_verification_record(
        backup=backup,
        ok=True,
        message=f"Restored into {restore.target_database} and every checksum matched.",
    )
    log_action(actor=restore.created_by, action="datamgmt.restored", target=restore, details=result)
    restore.refresh_from_db()
    return restore


def restore_abandon(*, restore_id: str, error: str) -> None:
    Restore.objects.filter(pk=restore_id).exclude(status=WorkStatus.SUCCEEDED).update(
        status=WorkStatus.FAILED, error=error[:2000], pending_key=None, finished_at=timezone.now()
    )
