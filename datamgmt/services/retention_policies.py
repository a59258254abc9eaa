"""Retention policies' writes (validated, audited)."""

from __future__ import annotations

from typing import Any

from accounts.models import User
from accounts.services import log_action
from datamgmt.models import RetentionPolicy
from datamgmt.services.retention import policy_validate


def policy_create(
    *,
    actor: User | None,
    name: str,
    scope: str,
    age_days: int,
    filters: dict[str, Any] | None = None,
    auto_purge: bool = False,
) -> RetentionPolicy:
    """A retention policy, checked first (scope, age, filters)."""
    policy_validate(scope=scope, age_days=age_days, filters=filters or {})
    policy = RetentionPolicy.objects.create(
        name=name, scope=scope, age_days=age_days, filters=filters or {}, auto_purge=auto_purge
    )
    log_action(
        actor=actor,
        action="datamgmt.policy_created",
        target=policy,
        details={"scope": scope, "age_days": age_days},
    )
    return policy


def policy_update(
    *, policy: RetentionPolicy, actor: User | None, **changes: Any
) -> RetentionPolicy:
    merged = {
        "scope": policy.scope,
        "age_days": policy.age_days,
        "filters": policy.filters,
        **changes,
    }
    policy_validate(scope=merged["scope"], age_days=merged["age_days"], filters=merged["filters"])
    for name, value in changes.items():
        setattr(policy, name, value)
    policy.save()
    log_action(
        actor=actor,
        action="datamgmt.policy_updated",
        target=policy,
        details={k: v for k, v in changes.items() if k != "filters"},
    )
    return policy


def policy_delete(*, policy: RetentionPolicy, actor: User | None) -> None:
    log_action(actor=actor, action="datamgmt.policy_deleted", target=policy)
    policy.delete()
