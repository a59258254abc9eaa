"""Backups: full (a pg_dump archive), incremental (changes since the last backup of any
type) and differential (changes since the last full), each with a manifest beside it.

Why and how: README.md, "Data management", and datamgmt/pg.py for the change log.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Callable
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import psycopg
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from psycopg import sql

from accounts.models import User
from accounts.services import log_action
from core.errors import ApplicationError, Conflict
from datamgmt import age, pg
from datamgmt.models import Backup, BackupType, Encryption, Verification, WorkStatus
from datamgmt.streams import OutputStream

Progress = Callable[[int, int, str], None]
MANIFEST_FORMAT = "chatter-backup/1"
BACKUP_HANDLER = "datamgmt_backup"


class BackupRefused(ApplicationError):
    """A backup or restore that cannot be done as asked (the message says why)."""

    code = "backup_refused"


def backup_directory() -> Path:
    configured = getattr(settings, "DATAMGMT_BACKUP_DIR", None) or os.environ.get(
        "CHATTER_BACKUP_DIR"
    )
    return Path(configured) if configured else Path(settings.DATA_DIR) / "backups"


def configured_recipients() -> list[str]:
    """The operator's age public keys (``CHATTER_BACKUP_RECIPIENTS``, comma-separated)."""
    raw = getattr(settings, "DATAMGMT_BACKUP_RECIPIENTS", None)
    if raw is None:
        raw = os.environ.get("CHATTER_BACKUP_RECIPIENTS", "")
    items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    return [item.strip() for item in items if item.strip()]


def scrypt_log_n() -> int:
    return int(getattr(settings, "DATAMGMT_SCRYPT_LOG_N", age.DEFAULT_SCRYPT_LOG_N))


def chatter_version() -> str:
    try:
        return version("chatter")
    except PackageNotFoundError:
        return "0.1.0"


def manifest_path(file_path: Path) -> Path:
    return file_path.with_name(file_path.name + ".manifest.json")


def _write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def encryption_validate(
    *, passphrase: str | None, recipients: list[str] | None
) -> tuple[str, bytes | None, bytes | None]:
    """(encryption kind, file key, header) for what was asked; a 400 for bad recipients."""
    if passphrase and recipients:
        raise ApplicationError(
            "Give a passphrase or recipients, not both.",
            code="invalid_encryption",
            details={"passphrase": ["Not together with recipients."]},
        )
    if recipients:
        bad = []
        for recipient in recipients:
            try:
                age.recipient_parse(recipient)
            except ValueError:
                bad.append(recipient)
        if bad:
            raise ApplicationError(
                "Not an age public key (age1...): " + ", ".join(bad),
                code="invalid_recipient",
                details={"recipients": [f"Not an age public key: {b}" for b in bad]},
            )
        key, header = age.encryption_prepare(recipients=recipients)
        return Encryption.RECIPIENTS, key, header
    if passphrase:
        key, header = age.encryption_prepare(passphrase=passphrase, scrypt_log_n=scrypt_log_n())
        return Encryption.PASSPHRASE, key, header
    return Encryption.NONE, None, None


def _parent_for(kind: str) -> Backup | None:
    done = Backup.objects.filter(status=WorkStatus.SUCCEEDED)
    if kind == BackupType.INCREMENTAL:
        return done.order_by("-finished_at").first()
    if kind == BackupType.DIFFERENTIAL:
        return done.filter(type=BackupType.FULL).order_by("-finished_at").first()
    return None


def backup_create(
    *,
    type: str,
    actor: User | None,
    passphrase: str | None = None,
    recipients: list[str] | None = None,
    directory: Path | None = None,
) -> Backup:
    """Record a backup to make (pending): its encryption header is made now, so the
    passphrase goes no further than this call. The job or the command runs it."""
    if type not in BackupType.values:
        raise ApplicationError(
            f"Unknown backup type '{type}'.",
            code="invalid_type",
            details={"type": [f"One of {', '.join(BackupType.values)}."]},
        )
    if type != BackupType.FULL and _parent_for(type) is None:
        article = "An" if type == BackupType.INCREMENTAL else "A"
        raise BackupRefused(
            f"{article} {type} backup needs a full backup to build on: make a full one first.",
            code="no_full_backup",
        )
    if recipients is None and not passphrase:
        recipients = configured_recipients() or None
    kind, key, header = encryption_validate(passphrase=passphrase, recipients=recipients)
    backup = Backup.objects.create(
        type=type,
        encryption=kind,
        encryption_header=header,
        pending_key=key,
        directory=str(directory or backup_directory()),
        created_by=actor if actor is not None and actor.is_authenticated else None,
    )
    log_action(
        actor=actor,
        action="datamgmt.backup_requested",
        target=backup,
        details={"type": type, "encryption": kind},
    )
    return backup


def backup_enqueue(*, backup: Backup) -> Backup:
    """Run the backup on the job queue (after commit)."""
    from jobs.services import enqueue

    job = enqueue(
        BACKUP_HANDLER,
        args={"backup_id": str(backup.pk)},
        priority="high",
        owner=backup.created_by,
        timeout=3600,
        max_attempts=1,
    )
    Backup.objects.filter(pk=backup.pk).update(job=job)
    backup.job = job
    return backup


def backup_request(
    *,
    type: str,
    actor: User,
    passphrase: str | None = None,
    recipients: list[str] | None = None,
) -> Backup:
    """The API's backup: recorded now, made by a job."""
    with transaction.atomic():
        backup = backup_create(type=type, actor=actor, passphrase=passphrase, recipients=recipients)
        return backup_enqueue(backup=backup)


def backup_abandon(*, backup_id: str, error: str) -> None:
    Backup.objects.filter(pk=backup_id).exclude(status=WorkStatus.SUCCEEDED).update(
        status=WorkStatus.FAILED, error=error[:2000], pending_key=None, finished_at=timezone.now()
    )


def _file_name(backup: Backup, started: datetime) -> str:
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    suffix = ".dump" if backup.type == BackupType.FULL else ".tar.zst"
    if backup.encryption != Encryption.NONE:
        suffix += ".age"
    return f"chatter-{stamp}-{backup.type}-{str(backup.pk)[:8]}{suffix}"


def backup_run(*, backup_id: str, progress: Progress | None = None) -> Backup:
    """Make a recorded backup: the file, its manifest, the row. A failure (or Ctrl-C)
    leaves no file and marks the backup failed."""
    claimed = Backup.objects.filter(pk=backup_id, status=WorkStatus.PENDING).update(
        status=WorkStatus.RUNNING, started_at=timezone.now()
    )
    backup = Backup.objects.get(pk=backup_id)
    if not claimed:
        raise Conflict(f"Backup {backup_id} is {backup.status}, not pending.", code="not_pending")
    try:
        with pg.backup_lock(pg.django_conninfo()) as acquired:
            if not acquired:
                raise Conflict(
                    "Another backup is running; try again once it has finished.",
                    code="backup_running",
                )
            result = _backup_make(backup, progress or (lambda done, total, message: None))
            _changes_prune()
    except BaseException as exc:
        backup_abandon(backup_id=backup_id, error=f"{type(exc).__name__}: {exc}")
        raise
    log_action(
        actor=backup.created_by,
        action="datamgmt.backup_made",
        target=result,
        details={"type": result.type, "file": result.file_name, "size": result.size},
    )
    return result


def _backup_make(backup: Backup, progress: Progress) -> Backup:
    info = pg.django_conninfo()
    parent = _parent_for(backup.type) if backup.type != BackupType.FULL else None
    if backup.type != BackupType.FULL and parent is None:
        raise BackupRefused("No full backup to build on.", code="no_full_backup")
    if backup.type == BackupType.FULL:
        with pg.connect(info) as conn:
            pg.tracking_ensure(conn)
    started = timezone.now()
    directory = Path(backup.directory)
    path = directory / _file_name(backup, started)
    key = bytes(backup.pending_key) if backup.pending_key is not None else None
    header = bytes(backup.encryption_header) if backup.encryption_header is not None else None
    with pg.snapshot_transaction(info) as (conn, exported, snapshot):
        all_tables = pg.tables(conn)
        migrations = pg.migrations_applied(conn)
        fingerprint = pg.schema_fingerprint(all_tables)
        manifest: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "id": str(backup.pk),
            "type": backup.type,
            "created_at": started.isoformat(),
            "snapshot": snapshot,
            "schema_version": pg.schema_version(migrations),
            "schema_fingerprint": fingerprint,
            "migrations": migrations,
            "chatter_version": chatter_version(),
            "postgres_version": conn.info.server_version,
            "encryption": backup.encryption,
            "parent": None,
            "chain": [],
        }
        if parent is not None:
            parent_manifest = parent.manifest
            if parent_manifest.get("schema_fingerprint") != fingerprint:
                raise BackupRefused(
                    "The schema changed since the last full backup (a migration ran): make a "
                    "full backup.",
                    code="schema_changed",
                )
            untracked = {t.name for t in all_tables if t.backed_up} - pg.tracked_tables(conn)
            if untracked:
                raise BackupRefused(
                    "Changes to these tables were not tracked since the last full backup: "
                    + ", ".join(sorted(untracked))
                    + ". Make a full backup.",
                    code="untracked_tables",
                )
            manifest["parent"] = {
                "id": str(parent.pk),
                "type": parent.type,
                "file": parent.file_name,
                "sha256": parent.sha256,
            }
            manifest["chain"] = [*parent_manifest.get("chain", []), str(parent.pk)]
            manifest["base_snapshot"] = parent.snapshot
        compression = "none" if backup.type == BackupType.FULL else "zstd"
        with OutputStream(path, compression=compression, file_key=key, header=header) as out:
            if backup.type == BackupType.FULL:
                tables_checksums = _full_dump(conn, exported, info, all_tables, out, progress)
                manifest["compression"] = "pg_dump custom (gzip)"
            else:
                manifest["changes"], tables_checksums = _changes_write(
                    conn, parent.snapshot, all_tables, out, manifest, progress
                )
                manifest["compression"] = "zstd"
            manifest["tables"] = tables_checksums
            manifest["sequences"] = pg.sequences(conn)
        manifest.update({"file": path.name, "size": out.size, "sha256": out.sha256})
    _write_json_atomically(manifest_path(path), manifest)
    Backup.objects.filter(pk=backup.pk).update(
        status=WorkStatus.SUCCEEDED,
        parent=parent,
        file_name=path.name,
        size=out.size,
        sha256=out.sha256,
        snapshot=snapshot,
        schema_version=manifest["schema_version"],
        manifest=manifest,
        pending_key=None,
        finished_at=timezone.now(),
        error="",
    )
    backup.refresh_from_db()
    return backup


_DUMPING = re.compile(r"dumping contents of table \"?([^\"\s]+)\"?")


def full_dump_command(info: str, *, snapshot: str | None, all_tables: list[pg.Table]) -> list[str]:
    """pg_dump's arguments for a full backup (also what the benchmark runs bare)."""
    command = [pg.pg_binary("pg_dump"), "--format=custom", "--compress=gzip:3", "--verbose"]
    if snapshot:
        command.append(f"--snapshot={snapshot}")
    for table in all_tables:
        if not table.backed_up:
            command.append(f"--exclude-table-data={sql.Identifier(table.name).as_string()}")
    env_info = pg.libpq_env(info)["_CHATTER_CONNINFO"]
    return [*command, f"--dbname={env_info}"]


def _full_dump(
    conn: psycopg.Connection,
    exported: str,
    info: str,
    all_tables: list[pg.Table],
    out: OutputStream,
    progress: Progress,
) -> dict[str, Any]:
    """pg_dump in our snapshot into ``out``, while this connection sums the same snapshot."""
    total = sum(1 for t in all_tables if t.backed_up)
    env = pg.libpq_env(info)
    env.pop("_CHATTER_CONNINFO")
    process = subprocess.Popen(
        full_dump_command(info, snapshot=exported, all_tables=all_tables),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    errors: list[str] = []
    sums: dict[str, Any] = {}
    failure: list[BaseException] = []

    def read_stderr() -> None:
        done = 0
        for raw in process.stderr:  # type: ignore[union-attr]
            line = raw.decode(errors="replace").strip()
            match = _DUMPING.search(line)
            if match:
                done += 1
                progress(min(done, total), total, f"table {match.group(1)}")
            elif "error" in line.lower():
                errors.append(line)

    def checksum() -> None:
        try:
            sums.update(pg.checksums(conn, all_tables))
        except BaseException as exc:  # reported by the caller
            failure.append(exc)

    reader = threading.Thread(target=read_stderr, daemon=True)
    summer = threading.Thread(target=checksum, daemon=True)
    reader.start()
    summer.start()
    try:
        while block := process.stdout.read(1 << 20):  # type: ignore[union-attr]
            out.write(block)
    except BaseException:
        process.kill()
        process.wait()
        summer.join()
        process.stdout.close()  # type: ignore[union-attr]
        process.stderr.close()  # type: ignore[union-attr]
        raise
    code = process.wait()
    reader.join()
    summer.join()
    process.stdout.close()  # type: ignore[union-attr]
    process.stderr.close()  # type: ignore[union-attr]
    if code != 0:
        raise pg.DatabaseToolError(f"pg_dump failed ({code}): {' '.join(errors)[:1000]}")
    if failure:
        raise failure[0]
    return sums


def _copy_to_file(conn: psycopg.Connection, query: sql.Composable, handle: Any) -> int:
    lines = 0
    with conn.cursor().copy(sql.SQL("COPY ({}) TO STDOUT").format(query)) as copy:
        for block in copy:
            handle.write(block)
            lines += bytes(block).count(b"\n")
    return lines


def _tar_add(tar: tarfile.TarFile, name: str, handle: Any) -> None:
    handle.flush()
    info = tarfile.TarInfo(name)
    info.size = handle.tell()
    info.mtime = 0
    handle.seek(0)
    tar.addfile(info, handle)


def _changes_write(
    conn: psycopg.Connection,
    base_snapshot: str,
    all_tables: list[pg.Table],
    out: OutputStream,
    manifest: dict[str, Any],
    progress: Progress,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The tar of changes since ``base_snapshot``: for each changed table its changed keys
    (COPY text) and the current rows of those keys (absent keys were deleted)."""
    by_name = {t.name: t for t in all_tables if t.backed_up}
    changed = {
        n: whole for n, whole in pg.changed_tables(conn, base_snapshot).items() if n in by_name
    }
    summary: dict[str, Any] = {}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for index, name in enumerate(sorted(changed)):
            table = by_name[name]
            whole = changed[name] or not table.primary_key
            progress(index, len(changed), f"table {name}")
            with tempfile.TemporaryFile() as keys, tempfile.TemporaryFile() as rows:
                columns = pg.column_list(table)
                if whole:
                    key_count = 0
                    row_query = sql.SQL("SELECT {} FROM {}").format(columns, sql.Identifier(name))
                else:
                    key_query = pg.changed_keys_query(table, base_snapshot)
                    key_count = _copy_to_file(conn, key_query, keys)
                    row_query = sql.SQL("SELECT {} FROM {} WHERE ({}) IN ({})").format(
                        columns,
                        sql.Identifier(name),
                        pg.key_list(table),
                        sql.SQL("SELECT {} FROM ({}) k").format(pg.key_list(table), key_query),
                    )
                row_count = _copy_to_file(conn, row_query, rows)
                _tar_add(tar, f"tables/{name}.keys", keys)
                _tar_add(tar, f"tables/{name}.rows", rows)
            summary[name] = {"keys": key_count, "rows": row_count, "whole": whole}
        progress(len(changed), len(changed), "checksums")
        sums = pg.checksums(conn, all_tables)
        inner = json.dumps({**manifest, "changes": summary, "tables": sums}).encode()
        with tempfile.TemporaryFile() as handle:
            handle.write(inner)
            _tar_add(tar, "manifest.json", handle)
    return summary, sums


def pg_changes_prune() -> int:
    """Maintenance: drop change-log rows older than the latest full backup's snapshot
    (skipped while a backup runs: it prunes when it ends)."""
    with pg.backup_lock(pg.django_conninfo()) as acquired:
        return _changes_prune() if acquired else 0


def _changes_prune() -> int:
    latest_full = (
        Backup.objects.filter(status=WorkStatus.SUCCEEDED, type=BackupType.FULL)
        .order_by("-finished_at")
        .first()
    )
    with pg.connect(pg.django_conninfo()) as conn:
        return pg.changes_prune(
            conn, keep_after_snapshot=latest_full.snapshot if latest_full else None
        )


def backup_chain(*, backup: Backup) -> list[Backup]:
    """The backups a restore of ``backup`` applies, the full first."""
    chain = [backup]
    while chain[-1].parent_id is not None:
        chain.append(Backup.objects.get(pk=chain[-1].parent_id))
    chain.reverse()
    return chain


def backup_verification_record(*, backup: Backup, ok: bool, message: str) -> None:
    Backup.objects.filter(pk=backup.pk).update(
        verification=Verification.VERIFIED if ok else Verification.FAILED,
        verification_message=message[:2000],
        verified_at=timezone.now(),
    )
