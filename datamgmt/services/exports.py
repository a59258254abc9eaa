"""Exports: a scope's tables written as a stream in one format, compressed, optionally
age-encrypted with a passphrase, as a job; downloaded by their owner until they expire."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from accounts.services import log_action
from core.errors import ApplicationError, Conflict, NotFound
from datamgmt import age
from datamgmt.formats import EXTENSIONS, writer_for
from datamgmt.models import Compression, Export, ExportFormat, ExportScope, WorkStatus
from datamgmt.scopes import ExportTable, export_tables, sql_sequences
from datamgmt.services.backups import chatter_version, scrypt_log_n
from datamgmt.streams import SUFFIXES, OutputStream

Progress = Callable[[int, int, str], None]
EXPORT_HANDLER = "datamgmt_export"
MIN_PASSPHRASE = 8


def export_directory() -> Path:
    configured = getattr(settings, "DATAMGMT_EXPORT_DIR", None) or os.environ.get(
        "CHATTER_EXPORT_DIR"
    )
    return Path(configured) if configured else Path(settings.DATA_DIR) / "exports"


def export_ttl() -> timedelta:
    days = getattr(settings, "DATAMGMT_EXPORT_TTL_DAYS", None) or os.environ.get(
        "CHATTER_EXPORT_TTL_DAYS", "7"
    )
    return timedelta(days=int(days))


def export_file_name(*, name: str, fmt: str, compression: str, encrypted: bool) -> str:
    outer = "none" if fmt == "parquet" else compression  # Parquet compresses its columns
    return f"{name}.{EXTENSIONS[fmt]}{SUFFIXES[outer]}" + (".age" if encrypted else "")


def _choice(value: Any, choices: Any, field: str) -> str:
    if value not in choices.values:
        raise ApplicationError(
            f"Unknown {field} '{value}'.",
            code=f"invalid_{field}",
            details={field: [f"One of {', '.join(choices.values)}."]},
        )
    return str(value)


def passphrase_check(passphrase: str | None) -> None:
    if passphrase is not None and len(passphrase) < MIN_PASSPHRASE:
        raise ApplicationError(
            f"A passphrase has at least {MIN_PASSPHRASE} characters.",
            code="weak_passphrase",
            details={"passphrase": [f"At least {MIN_PASSPHRASE} characters."]},
        )


def export_request(
    *,
    owner: User,
    scope: str,
    format: str,
    compression: str = Compression.NONE,
    passphrase: str | None = None,
    parameters: dict[str, Any] | None = None,
) -> Export:
    """Check the request (scope, its parameters, who may export it), record the export and
    queue its job. The passphrase becomes this export's age header here and goes no further."""
    scope = _choice(scope, ExportScope, "scope")
    fmt = _choice(format, ExportFormat, "format")
    compression = _choice(compression, Compression, "compression")
    passphrase_check(passphrase)
    parameters = dict(parameters or {})
    export_tables(
        scope=scope, parameters=parameters, owner=owner
    )  # 400/403/404 now, not in the job
    key = header = None
    if passphrase:
        key, header = age.encryption_prepare(passphrase=passphrase, scrypt_log_n=scrypt_log_n())
    from jobs.services import enqueue

    with transaction.atomic():
        export = Export.objects.create(
            owner=owner,
            scope=scope,
            parameters=parameters,
            format=fmt,
            compression=compression,
            encrypted=bool(passphrase),
            encryption_header=header,
            pending_key=key,
            expires_at=timezone.now() + export_ttl(),
        )
        job = enqueue(
            EXPORT_HANDLER,
            args={"export_id": str(export.pk)},
            owner=owner,
            timeout=3600,
            max_attempts=2,
        )
        Export.objects.filter(pk=export.pk).update(job=job)
        log_action(
            actor=owner,
            action="datamgmt.export_requested",
            target=export,
            details={
                "scope": scope,
                "format": fmt,
                "compression": compression,
                "encrypted": bool(passphrase),
            },
        )
    export.refresh_from_db()
    return export


def tables_write(
    tables: list[ExportTable],
    *,
    path: Path,
    fmt: str,
    compression: str,
    meta: dict[str, Any],
    file_key: bytes | None = None,
    header: bytes | None = None,
    progress: Progress | None = None,
) -> tuple[OutputStream, dict[str, int]]:
    """Write ``tables`` to ``path`` (complete, or not at all)."""
    report = progress or (lambda done, total, message: None)
    counts: dict[str, int] = {}
    total = sum(t.count() for t in tables)
    done = 0
    outer = "none" if fmt == "parquet" else compression
    with OutputStream(path, compression=outer, file_key=file_key, header=header) as out:
        writer = writer_for(fmt, out, meta, compression=compression)
        if fmt == "sql":
            writer.sequences = sql_sequences(tables)
        for table in tables:
            writer.begin(table.name, table.columns)
            rows = 0
            for row in table.rows():
                writer.row(row)
                rows += 1
                done += 1
                if done % 1000 == 0:
                    report(done, total, table.name)
            writer.end()
            counts[table.name] = rows
            report(done, total, table.name)
        writer.close()
    return out, counts


def export_run(*, export_id: str, progress: Progress | None = None) -> Export:
    """The job: write the export's file (its key wiped whatever happens)."""
    claimed = Export.objects.filter(
        pk=export_id, status__in=[WorkStatus.PENDING, WorkStatus.RUNNING]
    ).update(status=WorkStatus.RUNNING)
    export = Export.objects.select_related("owner").get(pk=export_id)
    if not claimed:
        raise Conflict(f"Export {export_id} is {export.status}.", code="not_pending")
    name = f"{export.scope}-{timezone.now():%Y%m%dT%H%M%SZ}-{str(export.pk)[:8]}"
    file_name = export_file_name(
        name=name, fmt=export.format, compression=export.compression, encrypted=export.encrypted
    )
    meta = {
        "format": "chatter-export/1",
        "id": str(export.pk),
        "scope": export.scope,
        "owner": export.owner.username,
        "created_at": timezone.now().isoformat(),
        "chatter_version": chatter_version(),
    }
    tables = export_tables(
        scope=export.scope,
        parameters=export.parameters,
        owner=export.owner,
        for_sql=export.format == "sql",
    )
    out, counts = tables_write(
        tables,
        path=export_directory() / file_name,
        fmt=export.format,
        compression=export.compression,
        meta=meta,
        file_key=bytes(export.pending_key) if export.pending_key is not None else None,
        header=bytes(export.encryption_header) if export.encryption_header is not None else None,
        progress=progress,
    )
    Export.objects.filter(pk=export.pk).update(
        status=WorkStatus.SUCCEEDED,
        file_name=file_name,
        size=out.size,
        sha256=out.sha256,
        row_counts=counts,
        pending_key=None,
        error="",
        finished_at=timezone.now(),
    )
    export.refresh_from_db()
    return export


def export_abandon(*, export_id: str, error: str) -> None:
    Export.objects.filter(pk=export_id).exclude(status=WorkStatus.SUCCEEDED).update(
        status=WorkStatus.FAILED, error=error[:2000], pending_key=None, finished_at=timezone.now()
    )


def export_file(*, export: Export, user: User) -> Path:
    """The file to send its owner (only its owner: anyone else gets a 404)."""
    if export.owner_id != user.pk:
        raise NotFound("Not found.", code="not_found")
    if export.status == WorkStatus.EXPIRED or export.expires_at <= timezone.now():
        raise ApplicationError("This export has expired.", code="export_expired", status=410)
    if export.status != WorkStatus.SUCCEEDED:
        raise Conflict(
            f"The export is {export.status}: nothing to download yet.", code="export_not_ready"
        )
    path = export_directory() / export.file_name
    if not path.exists():
        raise ApplicationError("This export's file is gone.", code="export_expired", status=410)
    log_action(actor=user, action="datamgmt.export_downloaded", target=export)
    return path


def exports_expire() -> dict[str, int]:
    """Maintenance: delete the files of expired exports and mark them expired."""
    expired = 0
    for export in Export.objects.filter(expires_at__lte=timezone.now()).exclude(
        status=WorkStatus.EXPIRED
    ):
        if export.file_name:
            (export_directory() / export.file_name).unlink(missing_ok=True)
        Export.objects.filter(pk=export.pk).update(status=WorkStatus.EXPIRED, pending_key=None)
        expired += 1
    return {"expired": expired}
