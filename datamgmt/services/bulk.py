"""Bulk operations: delete, archive (export to a file the actor owns, then delete) or
reassign (staff) the objects a filter matches. The dry run counts in the request; the
confirmed operation is checked in the request and done by a job, with its owner's rights."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import connection, models, transaction
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import User
from accounts.services import log_action
from core.errors import ApplicationError, Forbidden
from datamgmt.models import Compression, Export, WorkStatus
from datamgmt.scopes import _custom_filter, model_table, owner_filter, owner_path
from datamgmt.services.retention import Progress, _cascade_counts, queryset_delete

if TYPE_CHECKING:
    from jobs.models import Job

BULK_HANDLER = "datamgmt_bulk_operation"
BULK_ACTIONS = ("delete", "archive", "reassign")
BULK_TARGETS = ("conversations", "documents", "agents")
BULK_LABELS = {
    "conversations": "conversations.Conversation",
    "documents": "knowledge.Document",
    "agents": "agents.Agent",
}


@dataclass(frozen=True)
class BulkPlan:
    model: type[models.Model]
    queryset: QuerySet[Any]
    new_owner: User | None


def _plan(*, actor: User, action: str, target: str, filters: Any, to_user: str | None) -> BulkPlan:
    """What the operation matches for ``actor`` (non-staff: only their own objects); every
    refusal (an unknown action or target, bad filters, a reassign by non-staff, an unknown
    ``to_user``) is raised here, before anything changes or is queued."""
    from django.apps import apps

    if action not in BULK_ACTIONS:
        raise ApplicationError(
            f"Unknown action '{action}'.",
            code="invalid_action",
            details={"action": [f"One of {', '.join(BULK_ACTIONS)}."]},
        )
    if target not in BULK_TARGETS:
        raise ApplicationError(
            f"Unknown target '{target}'.",
            code="invalid_target",
            details={"target": [f"One of {', '.join(BULK_TARGETS)}."]},
        )
    model = apps.get_model(BULK_LABELS[target])
    queryset = model._default_manager.filter(_custom_filter(model, filters or {}, target))
    if not actor.is_staff:
        queryset = queryset.filter(**owner_filter(owner_path(model) or "owner", actor))
    new_owner = None
    if action == "reassign":
        if not actor.is_staff:
            raise Forbidden("Only staff reassign objects.", code="permission_denied")
        new_owner = User.objects.filter(username=to_user or "").first()
        if new_owner is None:
            raise ApplicationError(
                "to_user names no user.",
                code="invalid_to_user",
                details={"to_user": ["An existing username."]},
            )
    return BulkPlan(model=model, queryset=queryset, new_owner=new_owner)


def bulk_preview(
    *,
    actor: User,
    action: str,
    target: str,
    filters: dict[str, Any] | None = None,
    to_user: str | None = None,
) -> dict[str, Any]:
    """The dry run: what the operation would change now, per model (cascades included)."""
    plan = _plan(actor=actor, action=action, target=target, filters=filters, to_user=to_user)
    counts: dict[str, int] = {}
    if action == "reassign":
        counts[plan.model._meta.label] = plan.queryset.count()
    else:
        _cascade_counts(plan.queryset, counts)
        counts = {k: v for k, v in counts.items() if v}
    return {"dry_run": True, "action": action, "target": target, "counts": counts}


def bulk_request(
    *,
    actor: User,
    action: str,
    target: str,
    filters: dict[str, Any] | None = None,
    to_user: str | None = None,
) -> Job:
    """Check the operation now (a refusal is a 4xx, and nothing is queued), then queue it as
    a job of the actor's: only they (and staff) see it, and it runs with their rights."""
    from jobs.services import enqueue

    _plan(actor=actor, action=action, target=target, filters=filters, to_user=to_user)
    return enqueue(
        BULK_HANDLER,
        args={"action": action, "target": target, "filters": filters or {}, "to_user": to_user},
        owner=actor,
    )


@contextmanager
def _one_snapshot() -> Iterator[None]:
    """One transaction that reads a single snapshot (REPEATABLE READ), so that what an archive
    writes is exactly what the delete removes, even while other requests commit. (Inside an
    outer transaction, a test's, the level can no longer be set: that one's is kept.)"""
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield


def _lock(queryset: QuerySet[Any]) -> None:
    """Lock the matched rows until the commit: nothing changes them, and nothing new is
    attached to them (an insert that refers to a row waits for its lock), while they are
    archived and deleted. Read through a cursor: memory stays flat however many match."""
    rows = queryset.select_for_update(of=("self",)).values_list("pk", flat=True)
    for _ in rows.iterator(chunk_size=2000):
        pass


def bulk_run(
    *,
    actor: User | None,
    action: str,
    target: str,
    filters: dict[str, Any] | None = None,
    to_user: str | None = None,
    job_id: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The confirmed operation (the job's work), with ``actor``'s rights as they are now, in
    one transaction with its audit entry: a failure changes nothing. An archive whose delete
    fails stays, complete, as an export. Returns the counts of what changed."""
    if actor is None or not actor.is_active:
        raise Forbidden("The requester of this operation is gone.", code="permission_denied")
    plan = _plan(actor=actor, action=action, target=target, filters=filters, to_user=to_user)
    label = plan.model._meta.label
    result: dict[str, Any] = {"dry_run": False, "action": action, "target": target}
    if job_id is not None:
        _interrupted_archives_end(job_id)
    archive = _archive_begin(actor, plan.model, job_id) if action == "archive" else None
    written: dict[str, Any] | None = None
    try:
        with _one_snapshot():
            _lock(plan.queryset)
            if action == "reassign":
                changed = plan.model._default_manager.filter(
                    pk__in=plan.queryset.values("pk")
                ).update(owner=plan.new_owner)
                result["counts"] = {label: changed}
                result["to_user"] = plan.new_owner.username  # type: ignore[union-attr]
            else:
                if archive is not None:
                    written = _archive_write(archive, plan.queryset)
                    result["archive"] = str(archive.pk)
                reason = "archived" if action == "archive" else "deleted"
                result["counts"] = queryset_delete(plan.queryset, progress, reason=reason)
            log_action(
                actor=actor,
                action=f"datamgmt.bulk_{action}",
                details={**result, "filters": filters or {}},
            )
    except BaseException as exc:
        if archive is not None:
            _archive_end(archive, written, error=f"{type(exc).__name__}: {exc}")
        raise
    if archive is not None:
        _archive_end(archive, written)
    return result


def _interrupted_archives_end(job_id: int) -> None:
    """Archives an earlier attempt of this job began and never ended (its worker was
    killed): failed, their files removed. What they held was not deleted (the delete
    commits with the archive's end), so this attempt archives it afresh."""
    from datamgmt.services.exports import export_directory

    for export in Export.objects.filter(parameters__job=job_id, status=WorkStatus.RUNNING):
        path = export_directory() / export.file_name
        for leftover in (path, path.with_name(path.name + ".partial")):
            leftover.unlink(missing_ok=True)
        Export.objects.filter(pk=export.pk, status=WorkStatus.RUNNING).update(
            status=WorkStatus.FAILED,
            error="An earlier attempt of its job was interrupted; nothing was deleted, and "
            "the next attempt archived afresh.",
            finished_at=timezone.now(),
        )


def _archive_begin(actor: User, model: type[models.Model], job_id: int | None) -> Export:
    """The archive's export, recorded (running) before anything is deleted, and committed
    whatever the delete does."""
    from datamgmt.services.exports import export_file_name, export_ttl

    export = Export.objects.create(
        owner=actor,
        scope="custom",
        parameters={"archive_of": model._meta.label, "job": job_id},
        format="json",
        compression=Compression.GZIP,
        status=WorkStatus.RUNNING,
        expires_at=timezone.now() + export_ttl(),
    )
    # Named now, so that maintenance deletes the file at expiry even if the job dies.
    export.file_name = export_file_name(
        name=f"archive-{timezone.now():%Y%m%dT%H%M%SZ}-{str(export.pk)[:8]}",
        fmt="json",
        compression="gzip",
        encrypted=False,
    )
    Export.objects.filter(pk=export.pk).update(file_name=export.file_name)
    return export


def _archive_write(export: Export, queryset: QuerySet[Any]) -> dict[str, Any]:
    """Write the objects and what cascades from them to the export's gzipped JSON file."""
    from datamgmt.services.exports import export_directory, tables_write

    model = queryset.model
    tables = []
    seen: set[type[models.Model]] = set()

    def add(qs: QuerySet[Any], depth: int = 0) -> None:
        if qs.model in seen or depth > 4:
            return
        seen.add(qs.model)
        tables.append(model_table(qs.model, qs, redact=False))
        for relation in qs.model._meta.related_objects:
            if relation.on_delete is models.CASCADE and relation.related_model is not qs.model:
                add(
                    relation.related_model._default_manager.filter(
                        **{f"{relation.field.name}__in": qs.values("pk")}
                    ),
                    depth + 1,
                )

    add(queryset)
    out, counts = tables_write(
        tables,
        path=export_directory() / export.file_name,
        fmt="json",
        compression="gzip",
        meta={"format": "chatter-export/1", "archive_of": model._meta.label, "id": str(export.pk)},
    )
    return {"size": out.size, "sha256": out.sha256, "row_counts": counts}


def _archive_end(export: Export, written: dict[str, Any] | None, *, error: str = "") -> None:
    """A written file makes a succeeded export (if the delete failed, it holds objects that
    are all still there); none, a failed one."""
    if written is not None:
        Export.objects.filter(pk=export.pk).update(
            status=WorkStatus.SUCCEEDED, finished_at=timezone.now(), **written
        )
    else:
        Export.objects.filter(pk=export.pk).update(
            status=WorkStatus.FAILED, error=error[:2000], finished_at=timezone.now()
        )
