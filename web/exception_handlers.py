"""DRF's and Ninja's exception handlers, both rendering the error envelope."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, JsonResponse
from django_ratelimit.exceptions import Ratelimited
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response
from rest_framework.views import set_rollback

from core.errors import ApplicationError, code_for_status, error_payload, error_response

logger = logging.getLogger("chatter.errors")


_RATE_LIMITED = error_payload("rate_limited", "Rate limit exceeded.")
_TOO_LARGE = error_payload("payload_too_large", "The request body is too large.")
# PostgreSQL unreachable (down, restarting, the pool's wait for a connection ran out): the
# client may retry, and nothing it sent is at fault.
_DATABASE_ERRORS = (OperationalError, InterfaceError)
_DATABASE_UNAVAILABLE = error_payload(
    "database_unavailable", "The database is unreachable right now; retry shortly."
)
_RETRY_HEADERS = {"Retry-After": "5"}


# --- DRF ---------------------------------------------------------------------------------
_DRF_CODES: dict[type[Exception], str] = {
    drf_exceptions.ParseError: "malformed_request",
    drf_exceptions.ValidationError: "validation_error",
    drf_exceptions.NotAuthenticated: "not_authenticated",
    drf_exceptions.AuthenticationFailed: "authentication_failed",
}


def _message_of(detail: Any) -> str:
    if isinstance(detail, list | tuple) and detail:
        return _message_of(detail[0])
    if isinstance(detail, dict):
        return "Invalid input."
    return str(detail)


def drf_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF's EXCEPTION_HANDLER: every exception becomes the envelope, 500s included."""
    headers: dict[str, str] = {}
    if isinstance(exc, Ratelimited):
        # A PermissionDenied, so it must come before the 403 mapping below.
        return Response(_RATE_LIMITED, status=429, headers={"Retry-After": "60"})
    if isinstance(exc, RequestDataTooBig):
        return Response(_TOO_LARGE, status=413)
    if isinstance(exc, _DATABASE_ERRORS):
        logger.warning(
            "database unavailable in %s: %s", context.get("view").__class__.__name__, exc
        )
        set_rollback()
        return Response(_DATABASE_UNAVAILABLE, status=503, headers=_RETRY_HEADERS)
    if isinstance(exc, ApplicationError):
        set_rollback()
        return Response(error_payload(exc.code, exc.message, exc.details), status=exc.status)
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf_exceptions.PermissionDenied()

    if isinstance(exc, drf_exceptions.APIException):
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header  # type: ignore[attr-defined]
        if getattr(exc, "wait", None) is not None:
            headers["Retry-After"] = str(int(exc.wait))  # type: ignore[attr-defined]
        code = _DRF_CODES.get(type(exc)) or code_for_status(exc.status_code)
        if isinstance(exc, drf_exceptions.ValidationError):
            detail = (
                exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
            )
            payload = error_payload(code, "Invalid input.", detail)
        else:
            payload = error_payload(code, _message_of(exc.detail))
        set_rollback()
        return Response(payload, status=exc.status_code, headers=headers)

    logger.exception("unhandled error in %s", context.get("view").__class__.__name__)
    set_rollback()
    return Response(error_payload("internal_error", "Internal server error."), status=500)


# --- Ninja -------------------------------------------------------------------------------
def ninja_field_errors(errors: list[dict[str, Any]]) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for error in errors:
        loc = [str(part) for part in error.get("loc", ()) if part not in ("body", "payload")]
        fields.setdefault(".".join(loc) or "non_field_errors", []).append(error.get("msg", ""))
    return fields


def install_ninja_handlers(api: Any) -> None:
    """Replace Ninja's default ``{"detail": ...}`` errors with the envelope."""
    from ninja.errors import AuthenticationError, HttpError, ValidationError

    def on_application_error(request: HttpRequest, exc: ApplicationError) -> JsonResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details)

    def on_validation(request: HttpRequest, exc: ValidationError) -> JsonResponse:
        return error_response(
            400, "validation_error", "Invalid input.", ninja_field_errors(exc.errors)
        )

    def on_auth(request: HttpRequest, exc: AuthenticationError) -> JsonResponse:
        return error_response(
            401,
            "not_authenticated",
            "Authentication credentials were not provided or are invalid.",
            headers={"WWW-Authenticate": 'Bearer realm="api"'},
        )

    def on_http(request: HttpRequest, exc: HttpError) -> JsonResponse:
        code = code_for_status(exc.status_code)
        if exc.status_code == 400 and "parse" in str(exc).lower():
            code = "malformed_request"
        return error_response(exc.status_code, code, str(exc))

    def on_404(request: HttpRequest, exc: Http404) -> JsonResponse:
        return error_response(404, "not_found", "Not found.")

    def on_permission(request: HttpRequest, exc: DjangoPermissionDenied) -> JsonResponse:
        return error_response(403, "permission_denied", str(exc) or "Permission denied.")

    def on_ratelimited(request: HttpRequest, exc: Ratelimited) -> JsonResponse:
        return JsonResponse(_RATE_LIMITED, status=429, headers={"Retry-After": "60"})

    def on_too_large(request: HttpRequest, exc: RequestDataTooBig) -> JsonResponse:
        return JsonResponse(_TOO_LARGE, status=413)

    def on_database_error(request: HttpRequest, exc: Exception) -> JsonResponse:
        logger.warning("database unavailable in %s: %s", request.path, exc)
        return JsonResponse(_DATABASE_UNAVAILABLE, status=503, headers=_RETRY_HEADERS)

    def on_exception(request: HttpRequest, exc: Exception) -> JsonResponse:
        if isinstance(exc, _DATABASE_ERRORS):
            return on_database_error(request, exc)
        logger.exception("unhandled error in %s", request.path)
        return error_response(500, "internal_error", "Internal server error.")

    api.add_exception_handler(Exception, on_exception)
    api.add_exception_handler(ApplicationError, on_application_error)
    api.add_exception_handler(ValidationError, on_validation)
    api.add_exception_handler(AuthenticationError, on_auth)
    api.add_exception_handler(HttpError, on_http)
    api.add_exception_handler(Http404, on_404)
    api.add_exception_handler(DjangoPermissionDenied, on_permission)
    api.add_exception_handler(Ratelimited, on_ratelimited)
    api.add_exception_handler(RequestDataTooBig, on_too_large)
