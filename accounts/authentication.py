"""`Authorization: Bearer <api key>` for DRF and Ninja, through one service."""

from __future__ import annotations

import asyncio
from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from ninja.security import HttpBearer, SessionAuthIsStaff
from rest_framework import authentication, exceptions

from accounts.models import ApiKey
from accounts.permissions import SCOPE_DENIED_MESSAGE, api_key_allows
from accounts.services import api_key_authenticate

INVALID_KEY_MESSAGE = "Invalid, revoked or expired API key."
_UNSET = object()


def bearer_token(request: HttpRequest) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


def api_key_from_request(request: HttpRequest) -> ApiKey | None:
    """The active key behind this request's bearer token, looked up once per request
    (the rate limiter needs it before DRF or Ninja authenticate)."""
    cached = request.__dict__.get("_chatter_api_key", _UNSET)
    if cached is _UNSET:
        token = bearer_token(request)
        cached = api_key_authenticate(token) if token else None
        request._chatter_api_key = cached  # type: ignore[attr-defined]
    return cached  # type: ignore[return-value]


async def _ready(value: Any) -> Any:
    return value


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Any) -> tuple[Any, ApiKey] | None:
        if bearer_token(request._request) is None:
            return None
        api_key = api_key_from_request(request._request)
        if api_key is None:
            raise exceptions.AuthenticationFailed(INVALID_KEY_MESSAGE)
        return api_key.user, api_key

    def authenticate_header(self, request: Any) -> str:
        # A WWW-Authenticate header makes DRF answer 401 rather than 403.
        return 'Bearer realm="api"'


class NinjaApiKeyAuth(HttpBearer):
    """Ninja's side: a sync callable, which Ninja runs in a thread for async operations.

    Ninja has no permission layer, so the scope rule DRF applies in ``HasApiScope`` is
    applied here, where every authenticated Ninja operation passes: a valid key without the
    method's scope is a 403 (Ninja's exception handler), before the operation runs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.is_async = True  # see __call__

    def __call__(self, request: HttpRequest) -> Any:
        """For an async operation (on the event loop) an awaitable, without the hop to a
        thread Ninja makes for a sync callable when the key is already known: the rate
        limiter looked it up before the view (api_key_from_request), and the rest is no
        I/O. For a sync operation (in its thread) the result itself."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return super().__call__(request)
        if "_chatter_api_key" in request.__dict__:
            return _ready(super().__call__(request))
        return sync_to_async(super().__call__)(request)

    def authenticate(self, request: HttpRequest, token: str) -> ApiKey | None:
        api_key = api_key_from_request(request)
        if api_key is None:
            return None
        if not api_key_allows(api_key, request.method):
            raise PermissionDenied(SCOPE_DENIED_MESSAGE)
        request.user = api_key.user
        return api_key


class NinjaStaffSessionAuth(SessionAuthIsStaff):
    """A staff member's admin session, for the operations the operator console calls from
    the browser (its chat streams through the API's own endpoint). CSRF is checked as for
    any session write; a non-staff session is not enough (clients use API keys)."""

    def _get_key(self, request: HttpRequest) -> str | None:
        # No session cookie, no session: the request is anonymous (401 from the key auth
        # beside this one), not a failed CSRF check (403), which only a session can fail.
        if self.param_name not in request.COOKIES:
            return None
        return super()._get_key(request)

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and user.is_active and user.is_staff:
            return user
        return None
