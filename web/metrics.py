"""Request rates and latencies by route, for Prometheus (core.metrics; `/metrics`)."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, resolve

from core.metrics import HTTP_REQUEST_SECONDS, HTTP_REQUESTS
from web.middleware import _SyncAndAsync

UNMATCHED = "<unmatched>"
STATIC = "<static>"
# Anything else a client sends as a method is one label, not one series per spelling.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def request_route(request: HttpRequest) -> str:
    """The URL pattern that served the request (`api/v1/jobs/<int:pk>/`), never the raw
    path: ids in paths would make a series per object."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        # Answered before URL resolution (static files, a rate limit, a size limit).
        if request.path_info.startswith(settings.STATIC_URL):
            return STATIC
        try:
            match = resolve(request.path_info)
        except Resolver404:
            return UNMATCHED
    return match.route or UNMATCHED


class RequestMetricsMiddleware(_SyncAndAsync):
    """Counts each response and times it to its headers, labelled by route pattern."""

    def before(self, request: HttpRequest) -> Any:
        request._metrics_started = time.perf_counter()  # type: ignore[attr-defined]
        return None

    def after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        elapsed = time.perf_counter() - request._metrics_started  # type: ignore[attr-defined]
        method = request.method if request.method in _METHODS else "OTHER"
        route = request_route(request)
        HTTP_REQUESTS.labels(method, route, str(response.status_code)).inc()
        HTTP_REQUEST_SECONDS.labels(method, route).observe(elapsed)
        return response
