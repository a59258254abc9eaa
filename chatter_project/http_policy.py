"""Response headers Django does not set itself (CSP, Permissions-Policy) and request size
limits that answer 413 before a body is read."""

from __future__ import annotations

import re

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from chatter_project.errors import error_response
from chatter_project.middleware import GateMiddleware, _SyncAndAsync


class SecurityHeadersMiddleware(_SyncAndAsync):
    def after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if settings.CHATTER_CSP:
            response.setdefault("Content-Security-Policy", settings.CHATTER_CSP)
        response.setdefault("Permissions-Policy", settings.CHATTER_PERMISSIONS_POLICY)
        return response


def body_limit(path: str) -> int:
    if any(re.search(pattern, path) for pattern in settings.CHATTER_UPLOAD_ROUTES):
        return settings.CHATTER_MAX_UPLOAD_BYTES
    return settings.CHATTER_MAX_REQUEST_BYTES


class RequestSizeLimitMiddleware(GateMiddleware):
    """A declared Content-Length over the route's limit is refused unread. Bodies without one
    (chunked) are bounded by DATA_UPLOAD_MAX_MEMORY_SIZE when read (also a 413, see
    ``threats.inspect`` and the exception handlers)."""

    blocking = False  # reads a header, never the body

    def check(self, request: HttpRequest) -> HttpResponse | None:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return error_response(400, "bad_request", "Content-Length is not a number.")
        limit = body_limit(request.path_info)
        if length > limit:
            return error_response(
                413,
                "payload_too_large",
                f"The request body is {length} bytes; this route accepts at most {limit}.",
                details={"limit": limit},
            )
        return None
