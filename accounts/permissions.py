"""API permissions: scopes on keys, staff-only operations.

Why and how: docs/architecture.md, "accounts/permissions.py".
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission

from accounts.models import ApiKey, ApiKeyScope

SCOPE_DENIED_MESSAGE = "This API key lacks the scope this request needs."


def scope_for_method(method: str | None) -> str:
    """`read` for safe methods (GET, HEAD, OPTIONS), `write` for everything else."""
    return ApiKeyScope.READ if (method or "GET").upper() in SAFE_METHODS else ApiKeyScope.WRITE


def api_key_allows(api_key: ApiKey, method: str | None) -> bool:
    return api_key.has_scope(scope_for_method(method))


class HasApiScope(BasePermission):
    """Authenticated, and a key (if one was used) with `read` for safe methods, `write` else."""

    message = SCOPE_DENIED_MESSAGE

    def has_permission(self, request: Any, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        if isinstance(request.auth, ApiKey):
            return api_key_allows(request.auth, request.method)
        return True


class IsStaff(BasePermission):
    message = "This operation needs a staff account."

    def has_permission(self, request: Any, view: Any) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.is_staff)
