"""Response headers Django does not set itself (CSP, Permissions-Policy), request size
limits that answer 413 before a body is read, and a nesting limit on JSON bodies checked
before anything parses them."""

from __future__ import annotations

import re
from itertools import accumulate

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse

from core.errors import error_response
from web.middleware import GateMiddleware, _SyncAndAsync


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


# A JSON string, escapes included (the unrolled form: linear, no backtracking).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = b"[]{}"
_NOT_BRACKETS = bytes(b for b in range(256) if b not in _BRACKETS)
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def json_nesting_exceeds(body: bytes, limit: int) -> bool:
    """Whether a JSON text nests arrays/objects deeper than ``limit``, without parsing it.

    Strings are blanked out (brackets inside them do not count), then the brackets alone are
    counted: iterative and linear, so a body nested 10,000 deep costs what its bytes cost.
    Malformed text is not judged here; the parser answers it with its own 400.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False  # cannot nest deeper than it has openings: the usual case, two scans
    brackets = _JSON_STRING.sub(b'""', body).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0) > limit


class JsonDepthLimitMiddleware(GateMiddleware):
    """Refuses (400 ``nested_too_deep``) a body nested deeper than
    ``CHATTER_MAX_JSON_NESTING`` before DRF, Ninja or the threat scanner parse and walk it
    (Python's json and recursive walks raise RecursionError near 1,000 levels). Every body
    but a form's is checked, whatever its Content-Type: Ninja parses bodies as JSON
    regardless of it."""

    blocking = False  # the body is already in memory (size-limited); CPU work only

    def check(self, request: HttpRequest) -> HttpResponse | None:
        if request.method in ("GET", "HEAD", "OPTIONS") or request.content_type in _FORM_TYPES:
            return None
        limit = settings.CHATTER_MAX_JSON_NESTING
        try:
            body = request.body
        except RequestDataTooBig:
            return error_response(
                413, "payload_too_large", "The request body is larger than this server accepts."
            )
        if not json_nesting_exceeds(body, limit):
            return None
        return error_response(
            400,
            "nested_too_deep",
            f"The JSON body nests arrays or objects deeper than {limit} levels.",
            details={"limit": limit},
        )
