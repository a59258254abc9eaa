"""Retention policies (preview = a dry run with counts per model; purge, audited, cascading
to chunks, messages and checkpoints) and bulk operations (delete, archive, reassign by
filter; dry run unless confirmed)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import connection, models, transaction
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import AuditLog, User
from accounts.services import log_action
from core.errors import ApplicationError, Forbidden
from datamgmt.models import Compression, Export, RetentionPolicy, WorkStatus
from datamgmt.scopes import _custom_filter, model_table, owner_filter, owner_path

Progress = Callable[[int, int, str], None]
PURGE_HANDLER = "datamgmt_retention_purge"
BATCH = 500
CHECKPOINT_TABLES = ("checkpoint_writes", "checkpoint_blobs", "checkpoints")


@dataclass(frozen=True)
class Target:
    label: str  # app_label.ModelName
    age_field: str

    @property
    def model(self) -> type[models.Model]:
        from django.apps import apps

        return apps.get_model(self.label)


TARGETS = {
    "conversations": Target("conversations.Conversation", "updated_at"),
    "documents": Target("knowledge.Document", "created_at"),
    "jobs": Target("jobs.Job", "finished_at"),
    "audit_logs": Target("accounts.AuditLog", "created_at"),
    "agent_interactions": Target("agents.AgentInteraction", "created_at"),
    "exports": Target("datamgmt.Export", "created_at"),
}
RETENTION_SCOPES = [(name, name) for name in sorted(TARGETS)]
BULK_TARGETS = ("conversations", "documents", "agents")
BULK_LABELS = {
    "conversations": "conversations.Conversation",
    "documents": "knowledge.Document",
    "agents": "agents.Agent",
}


def _target(scope: str) -> Target:
    if scope not in TARGETS:
        raise ApplicationError(
            f"Unknown retention scope '{scope}'.",
            code="invalid_scope",
            details={"scope": [f"One of {', '.join(TARGETS)}."]},
        )
    return TARGETS[scope]


def policy_validate(*, scope: str, age_days: Any, filters: Any) -> None:
    target = _target(scope)
    if not isinstance(age_days, int) or isinstance(age_days, bool) or not 0 <= age_days <= 36500:
        raise ApplicationError(
            "age_days is a whole number of days.",
            code="invalid_age",
            details={"age_days": ["From 0 to 36500."]},
        )
    _custom_filter(target.model, filters or {}, scope)


def policy_queryset(policy: RetentionPolicy) -> QuerySet[Any]:
    target = _target(policy.scope)
    cutoff = timezone.now() - timedelta(days=policy.age_days)
    queryset = target.model._default_manager.filter(**{f"{target.age_field}__lt": cutoff})
    if policy.scope == "jobs":
        queryset = queryset.filter(finished_at__isnull=False)
    return queryset.filter(_custom_filter(target.model, policy.filters or {}, policy.scope))


def _cascade_counts(queryset: QuerySet[Any], counts: dict[str, int], depth: int = 0) -> None:
    """Rows a delete of ``queryset`` removes, per model (Django's CASCADE relations), counted
    in SQL: nothing is loaded."""
    model = queryset.model
    counts[model._meta.label] = counts.get(model._meta.label, 0) + queryset.count()
    if depth > 4:
        return
    for relation in model._meta.related_objects:
        if relation.on_delete is not models.CASCADE or relation.related_model is model:
            continue
        related = relation.related_model._default_manager.filter(
            **{f"{relation.field.name}__in": queryset.values("pk")}
        )
        _cascade_counts(related, counts, depth + 1)
    if model._meta.label == "conversations.Conversation":
        threads = [str(pk) for pk in queryset.values_list("pk", flat=True)[:100_000]]
        counts["langgraph.checkpoints"] = _checkpoint_count(threads)


def _existing_checkpoint_tables() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND relname = ANY(%s)",
            [list(CHECKPOINT_TABLES)],
        )
        found = {r[0] for r in cursor.fetchall()}
    return [t for t in CHECKPOINT_TABLES if t in found]


def _checkpoint_count(threads: list[str]) -> int:
    if not threads or "checkpoints" not in _existing_checkpoint_tables():
        return 0
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM checkpoints WHERE thread_id = ANY(%s)", [threads])
        return int(cursor.fetchone()[0])


def _checkpoints_delete(threads: list[str]) -> int:
    deleted = 0
    with connection.cursor() as cursor:
        for table in _existing_checkpoint_tables():
            cursor.execute(
                f"DELETE FROM {connection.ops.quote_name(table)} WHERE thread_id = ANY(%s)",
                [threads],
            )
            if table == "checkpoints":
                deleted += cursor.rowcount
    return deleted


def _conversations_ended(pks: list[Any], reason: str) -> None:
    from conversations.events import conversation_ended_emit
    from conversations.models import Conversation

    now = timezone.now()
    ended = Conversation.objects.filter(pk__in=pks).only("pk", "title", "message_count", "owner_id")
    for conversation in ended:
        conversation_ended_emit(conversation, reason=reason, at=now)


def policy_preview(*, policy: RetentionPolicy) -> dict[str, Any]:
    """A dry run: what a purge would delete now, per model."""
    counts: dict[str, int] = {}
    _cascade_counts(policy_queryset(policy), counts)
    counts = {k: v for k, v in counts.items() if v}
    return {"dry_run": True, "policy": policy.name, "counts": counts, "total": sum(counts.values())}


def queryset_delete(
    queryset: QuerySet[Any], progress: Progress | None = None, *, reason: str = "deleted"
) -> dict[str, int]:
    """Delete in batches (each its own transaction: a purge interrupted keeps what it did),
    with Django's cascades, checkpoints of conversations and export files. Each conversation
    removed emits `conversation.ended` with ``reason`` in the batch's transaction."""
    model = queryset.model
    counts: dict[str, int] = {}
    total = queryset.count()
    done = 0
    while True:
        pks = list(queryset.values_list("pk", flat=True)[:BATCH])
        if not pks:
            break
        with transaction.atomic():
            if model is Export:
                from datamgmt.services.exports import export_directory

                for name in (
                    Export.objects.filter(pk__in=pks)
                    .exclude(file_name="")
                    .values_list("file_name", flat=True)
                ):
                    (export_directory() / name).unlink(missing_ok=True)
            if model._meta.label == "conversations.Conversation":
                _conversations_ended(pks, reason)
            _, per_model = model._default_manager.filter(pk__in=pks).delete()
            for label, count in per_model.items():
                if count:
                    counts[label] = counts.get(label, 0) + count
            if model._meta.label == "conversations.Conversation":
                removed = _checkpoints_delete([str(pk) for pk in pks])
                if removed:
                    counts["langgraph.checkpoints"] = (
                        counts.get("langgraph.checkpoints", 0) + removed
                    )
        done += len(pks)
        if progress:
            progress(done, total, model._meta.label)
    return counts


def policy_purge(
    *, policy: RetentionPolicy, actor: User | None = None, progress: Progress | None = None
) -> dict[str, Any]:
    """Delete what the policy covers now; audited, and recorded on the policy."""
    counts = queryset_delete(policy_queryset(policy), progress)
    result = {
        "dry_run": False,
        "policy": policy.name,
        "counts": counts,
        "total": sum(counts.values()),
    }
    RetentionPolicy.objects.filter(pk=policy.pk).update(
        last_run_at=timezone.now(), last_result=result
    )
    log_action(actor=actor, action="datamgmt.retention_purged", target=policy, details=result)
    return result


def retention_purge_all(
    *,
    auto_only: bool,
    dry_run: bool = False,
    actor: User | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    policies = RetentionPolicy.objects.all()
    if auto_only:
        policies = policies.filter(auto_purge=True)
    results = {}
    for policy in policies:
        results[policy.name] = (
            policy_preview(policy=policy)
            if dry_run
            else policy_purge(policy=policy, actor=actor, progress=progress)
        )
    return {"dry_run": dry_run, "policies": results}


def retention_due_enqueue() -> dict[str, Any]:
    """Maintenance (hourly): queue the daily purge once 24 h have passed since the last."""
    from jobs.models import Job, JobStatus
    from jobs.services import enqueue

    last = (
        Job.objects.filter(handler=PURGE_HANDLER)
        .order_by("-created_at")
        .values_list("created_at", flat=True)
        .first()
    )
    if not RetentionPolicy.objects.filter(auto_purge=True).exists():
        return {"queued": False, "reason": "no auto-purge policy"}
    if last is not None and last > timezone.now() - timedelta(hours=24):
        return {"queued": False, "last": last.isoformat()}
    job = enqueue(PURGE_HANDLER, priority="low", dedupe_key=PURGE_HANDLER)
    return {"queued": job.status in (JobStatus.PENDING, JobStatus.SCHEDULED), "job": job.pk}


# --- bulk operations ----------------------------------------------------------------------
def bulk_operation(
    *,
    actor: User,
    action: str,
    target: str,
    filters: dict[str, Any] | None = None,
    to_user: str | None = None,
    confirm: bool = False,
) -> dict[str, Any]:
    """Delete, archive (export to a JSON file the actor owns, then delete) or reassign (staff)
    the matched objects. Without ``confirm`` nothing changes: the counts are a dry run."""
    from django.apps import apps

    if action not in ("delete", "archive", "reassign"):
        raise ApplicationError(
            f"Unknown action '{action}'.",
            code="invalid_action",
            details={"action": ["One of delete, archive, reassign."]},
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
    counts: dict[str, int] = {}
    if action == "reassign":
        counts[model._meta.label] = queryset.count()
    else:
        _cascade_counts(queryset, counts)
        counts = {k: v for k, v in counts.items() if v}
    result: dict[str, Any] = {
        "dry_run": not confirm,
        "action": action,
        "target": target,
        "counts": counts,
    }
    if not confirm:
        return result
    if action == "reassign":
        with transaction.atomic():
            changed = model._default_manager.filter(pk__in=queryset.values("pk")).update(
                owner=new_owner
            )
        result["counts"] = {model._meta.label: changed}
        result["to_user"] = new_owner.username  # type: ignore[union-attr]
    else:
        if action == "archive":
            result["archive"] = str(_archive(actor, model, queryset).pk)
        reason = "archived" if action == "archive" else "deleted"
        result["counts"] = queryset_delete(queryset, reason=reason)
    log_action(
        actor=actor, action=f"datamgmt.bulk_{action}", details={**result, "filters": filters or {}}
    )
    return result


def _archive(actor: User, model: type[models.Model], queryset: QuerySet[Any]) -> Export:
    """A gzipped JSON export, owned by the actor, of the objects and what cascades from them."""
    from datamgmt.services.exports import (
        export_directory,
        export_file_name,
        export_ttl,
        tables_write,
    )

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
    export = Export.objects.create(
        owner=actor,
        scope="custom",
        parameters={"archive_of": model._meta.label},
        format="json",
        compression=Compression.GZIP,
        status=WorkStatus.RUNNING,
        expires_at=timezone.now() + export_ttl(),
    )
    name = export_file_name(
        name=f"archive-{timezone.now():%Y%m%dT%H%M%SZ}-{str(export.pk)[:8]}",
        fmt="json",
        compression="gzip",
        encrypted=False,
    )
    out, counts = tables_write(
        tables,
        path=export_directory() / name,
        fmt="json",
        compression="gzip",
        meta={"format": "chatter-export/1", "archive_of": model._meta.label, "id": str(export.pk)},
    )
    Export.objects.filter(pk=export.pk).update(
        status=WorkStatus.SUCCEEDED,
        file_name=name,
        size=out.size,
        sha256=out.sha256,
        row_counts=counts,
        finished_at=timezone.now(),
    )
    export.refresh_from_db()
    return export


__all__ = ["TARGETS", "AuditLog", "bulk_operation", "policy_preview", "policy_purge"]
