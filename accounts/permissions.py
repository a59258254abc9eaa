"""API permissions: scopes on keys, staff-only operations."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission

from accounts.models import ApiKey, ApiKeyScope


class HasApiScope(BasePermission):
    """Authenticated, and a key (if one was used) with `read` for safe methods, `write` else."""

    message = "This API key lacks the scope this request needs."

    def has_permission(self, request: Any, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        if isinstance(request.auth, ApiKey):
            needed = ApiKeyScope.READ if request.method in SAFE_METHODS else ApiKeyScope.WRITE
            return request.auth.has_scope(needed)
        return True


class IsStaff(BasePermission):
    message = "This operation needs a staff account."

    def has_permission(self, request: Any, view: Any) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.is_staff)
