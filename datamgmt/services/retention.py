"""Retention policies: preview (a dry run with counts per model) and purge (audited,
cascading to chunks, messages and checkpoints), which the API and the admin queue as a job."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.db import connection, models, transaction
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import AuditLog, User
from accounts.services import log_action
from core.errors import ApplicationError, Forbidden, NotFound
from datamgmt.models import Export, RetentionPolicy
from datamgmt.scopes import _custom_filter

if TYPE_CHECKING:
    from jobs.models import Job

Progress = Callable[[int, int, str], None]
PURGE_HANDLER = "datamgmt_retention_purge"
POLICY_PURGE_HANDLER = "datamgmt_policy_purge"
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


def policy_purge_request(*, policy: RetentionPolicy, actor: User) -> Job:
    """Queue a purge of this policy as a job of the actor's (the one already waiting or
    running for this policy and actor, if there is one). The policy's filters are checked now."""
    from jobs.services import enqueue

    policy_queryset(policy)  # a policy that cannot be applied is a 400 now, not in the job
    return enqueue(
        POLICY_PURGE_HANDLER,
        args={"policy_id": str(policy.pk)},
        owner=actor,
        dedupe_key=f"{POLICY_PURGE_HANDLER}:{policy.pk}",
    )


def policy_purge_run(
    *, policy_id: str, actor: User | None, progress: Progress | None = None
) -> dict[str, Any]:
    """The queued purge: by its requester, who must still be active staff."""
    if actor is None or not actor.is_active or not actor.is_staff:
        raise Forbidden("Only staff purge by a retention policy.", code="permission_denied")
    policy = RetentionPolicy.objects.filter(pk=policy_id).first()
    if policy is None:
        raise NotFound(f"Retention policy {policy_id} is gone.", code="not_found")
    return policy_purge(policy=policy, actor=actor, progress=progress)


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


__all__ = ["TARGETS", "AuditLog", "policy_preview", "policy_purge", "policy_purge_request"]
