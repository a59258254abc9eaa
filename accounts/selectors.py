"""Reads for accounts, and the ownership rule every app's selectors apply."""

from __future__ import annotations

from django.db.models import QuerySet

from accounts.models import ApiKey, User


def visible_to(queryset: QuerySet, user: User, *, owner_field: str = "owner") -> QuerySet:
    """Staff see every row; anyone else only rows they own (others' ids then give 404)."""
    if user.is_staff:
        return queryset
    return queryset.filter(**{owner_field: user})


def api_key_list(*, user: User) -> QuerySet[ApiKey]:
    return visible_to(ApiKey.objects.select_related("user"), user, owner_field="user")
