"""Data management's background work: exports, backups, restores, retention. All thin."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from core.errors import ApplicationError
from datamgmt.services.backups import BACKUP_HANDLER, backup_abandon, backup_run, pg_changes_prune
from datamgmt.services.bulk import BULK_HANDLER, bulk_run
from datamgmt.services.exports import EXPORT_HANDLER, export_abandon, export_run, exports_expire
from datamgmt.services.restores import RESTORE_HANDLER, restore_abandon, restore_run
from datamgmt.services.retention import (
    POLICY_PURGE_HANDLER,
    PURGE_HANDLER,
    policy_purge_run,
    retention_due_enqueue,
    retention_purge_all,
)
from jobs.registry import GiveUp, JobContext, PermanentJobError, job_handler, maintenance_step
from jobs.selectors import job_owner


def _progress(ctx: JobContext):  # type: ignore[no-untyped-def]
    def report(done: int, total: int, message: str) -> None:
        ctx.progress(100 * done // max(total, 1), message)
        ctx.raise_if_cancelled()

    return report


@contextmanager
def _refusals_are_final() -> Iterator[None]:
    # A refusal (the requester lost their rights, a filter no longer applies) is the same on
    # every attempt: the job fails at once rather than retrying it.
    try:
        yield
    except ApplicationError as exc:
        raise PermanentJobError(exc.message) from exc


@job_handler(
    EXPORT_HANDLER,
    timeout=3600,
    max_attempts=2,
    description="Write an export's file.",
    on_give_up=lambda outcome: export_abandon(
        export_id=outcome.args["export_id"], error=outcome.error
    ),
)
def export(ctx: JobContext, *, export_id: str) -> dict[str, Any]:
    done = export_run(export_id=export_id, progress=_progress(ctx))
    return {"file": done.file_name, "size": done.size, "rows": done.row_counts}


def _backup_gave_up(outcome: GiveUp) -> None:
    backup_abandon(backup_id=outcome.args["backup_id"], error=outcome.error)


@job_handler(
    BACKUP_HANDLER,
    timeout=3600,
    max_attempts=1,
    description="Make a backup.",
    on_give_up=_backup_gave_up,
)
def backup(ctx: JobContext, *, backup_id: str) -> dict[str, Any]:
    done = backup_run(backup_id=backup_id, progress=_progress(ctx))
    return {"file": done.file_name, "size": done.size, "type": done.type}


@job_handler(
    RESTORE_HANDLER,
    timeout=3600,
    max_attempts=1,
    description="Restore a backup chain into a new database.",
    on_give_up=lambda outcome: restore_abandon(
        restore_id=outcome.args["restore_id"], error=outcome.error
    ),
)
def restore(ctx: JobContext, *, restore_id: str) -> dict[str, Any]:
    done = restore_run(restore_id=restore_id, progress=_progress(ctx))
    return {"database": done.target_database, **done.result}


@job_handler(
    PURGE_HANDLER,
    timeout=3600,
    max_attempts=3,
    description="Purge by the auto-purge retention policies.",
)
def retention_purge(ctx: JobContext) -> dict[str, Any]:
    return retention_purge_all(auto_only=True, progress=_progress(ctx))


@job_handler(
    BULK_HANDLER,
    timeout=3600,
    max_attempts=3,
    description="A confirmed bulk operation (delete, archive, reassign), as its requester.",
)
def bulk_operation(
    ctx: JobContext,
    *,
    action: str,
    target: str,
    filters: dict[str, Any],
    to_user: str | None = None,
) -> dict[str, Any]:
    with _refusals_are_final():
        return bulk_run(
            actor=job_owner(job_id=ctx.job_id),
            action=action,
            target=target,
            filters=filters,
            to_user=to_user,
            job_id=ctx.job_id,
            progress=_progress(ctx),
        )


@job_handler(
    POLICY_PURGE_HANDLER,
    timeout=3600,
    max_attempts=3,
    description="Purge by one retention policy now, as its requester.",
)
def policy_purge(ctx: JobContext, *, policy_id: str) -> dict[str, Any]:
    with _refusals_are_final():
        return policy_purge_run(
            policy_id=policy_id, actor=job_owner(job_id=ctx.job_id), progress=_progress(ctx)
        )


@maintenance_step("datamgmt.exports_expire", order=50)
def expire_exports() -> dict[str, int]:
    return exports_expire()


@maintenance_step("datamgmt.change_log_prune", order=60)
def prune_change_log() -> dict[str, int]:
    return {"deleted": pg_changes_prune()}


@maintenance_step("datamgmt.retention_daily", order=70)
def retention_daily() -> dict[str, Any]:
    return retention_due_enqueue()
