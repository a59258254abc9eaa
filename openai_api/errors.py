"""OpenAI's error shape, ``{"error": {"message", "type", "param", "code"}}``, for everything
under /api/openai/: the API's own errors and Chatter's envelope (from the middleware: rate
limits, body limits, threat refusals, unknown paths) re-expressed in it."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse

from core.errors import ApplicationError
from web.middleware import _SyncAndAsync

PREFIX = "/api/openai/"

# Chatter's codes that OpenAI's clients know by another name.
_CODES = {
    "not_authenticated": "invalid_api_key",
    "authentication_failed": "invalid_api_key",
    "rate_limited": "rate_limit_exceeded",
    "unknown_agent": "model_not_found",
}


def error_type(status: int) -> str:
    """OpenAI's error ``type`` for a status: what its SDKs and clients branch on."""
    if status == 403:
        return "permission_error"
    if status == 429:
        return "requests"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


class InvalidRequest(ApplicationError):
    """A request OpenAI's contract refuses: 400 naming the ``param`` at fault."""

    status = 400
    code = "invalid_value"

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, status: int = 400
    ) -> None:
        super().__init__(message, code=code, details={"param": param}, status=status)
        self.param = param


class ModelNotFound(InvalidRequest):
    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model `{model}` does not exist or you do not have access to it: a model "
            "here is the slug of an active agent you may use (GET /api/openai/v1/models).",
            param="model",
            code="model_not_found",
            status=404,
        )


def openai_error(
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JsonResponse:
    response = JsonResponse(
        {"error": error_body(status, message, code=code, param=param)}, status=status
    )
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def error_body(
    status: int, message: str, *, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {
        "message": message,
        "type": error_type(status),
        "param": param,
        "code": _CODES.get(code or "", code),
    }


def application_error_body(exc: ApplicationError) -> dict[str, Any]:
    param = exc.param if isinstance(exc, InvalidRequest) else None
    return error_body(exc.status, exc.message, code=exc.code, param=param)


def _param(status: int, details: Any) -> str | None:
    # Chatter's field errors ({field: [messages]}: threat refusals, unstorable text) name
    # the field at fault, as OpenAI's param does.
    if status in (400, 422) and isinstance(details, dict) and len(details) == 1:
        ((field, problems),) = details.items()
        if isinstance(problems, list) and field != "non_field_errors":
            return str(field)
    return None


def openai_shaped(response: HttpResponse) -> HttpResponse:
    """Chatter's error envelope as OpenAI's error shape (other responses as they are)."""
    if response.status_code < 400 or getattr(response, "streaming", False):
        return response
    if not response.get("Content-Type", "").startswith("application/json"):
        return response
    try:
        error = json.loads(response.content)["error"]
    except (ValueError, KeyError, TypeError):
        return response
    if not isinstance(error, dict) or "type" in error:
        return response  # already OpenAI's
    status = response.status_code
    converted = openai_error(
        status,
        str(error.get("message") or "Error"),
        code=error.get("code"),
        param=_param(status, error.get("details")),
    )
    for name, value in response.items():
        if name.lower() not in ("content-type", "content-length"):
            converted[name] = value
    return converted


class OpenAIErrorShapeMiddleware(_SyncAndAsync):
    """Outside every middleware that answers with an error: whatever refuses a request under
    /api/openai/ (the rate limiter, the body limits, the threat scanner, the URL resolver),
    the client reads OpenAI's error shape, as its SDK expects."""

    def after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if not request.path.startswith(PREFIX):
            return response
        return openai_shaped(response)
