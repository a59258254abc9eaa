"""Reads for data management."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from accounts.models import User
from core.errors import NotFound
from datamgmt.models import Backup, Export, Restore, RetentionPolicy


def export_list(*, user: User) -> QuerySet[Export]:
    exports = Export.objects.select_related("owner")
    return exports if user.is_staff else exports.filter(owner=user)


def export_get(*, user: User, export_id: Any) -> Export:
    try:
        return export_list(user=user).get(pk=export_id)
    except (Export.DoesNotExist, ValueError) as exc:
        raise NotFound("Not found.", code="not_found") from exc


def backup_list() -> QuerySet[Backup]:
    return Backup.objects.all()


def restore_list() -> QuerySet[Restore]:
    return Restore.objects.all()


def policy_list() -> QuerySet[RetentionPolicy]:
    return RetentionPolicy.objects.all()
