"""Rate limits for everything under /api/, counted by django-ratelimit in the shared cache.

Why and how: docs/architecture.md, "web/ratelimits.py".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django_ratelimit.core import get_usage

from accounts.authentication import api_key_from_request
from core.client_ip import client_ip
from core.errors import error_response
from web.http_policy import path_policy, request_policy
from web.middleware import GateMiddleware

logger = logging.getLogger(__name__)


def route_class(method: str, path: str) -> str | None:
    """The limit class of a request, or None for exempt routes (probes)."""
    return path_policy(method, path).rate


def _identity(request: HttpRequest) -> tuple[str, Any]:
    api_key = api_key_from_request(request)
    if api_key is not None:
        return f"key:{api_key.pk}", api_key
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}", None
    return f"ip:{client_ip(request) or 'unknown'}", None


def rate_for(route: str, api_key: Any) -> str:
    if api_key is not None:
        own = api_key.expensive_rate_limit if route == "expensive" else api_key.rate_limit
        if own:
            return own
    return settings.CHATTER_RATE_LIMITS.get(route) or settings.CHATTER_RATE_LIMITS["default"]


@dataclass(frozen=True)
class Usage:
    route: str
    limit: int
    count: int
    reset: int

    @property
    def exceeded(self) -> bool:
        return self.count > self.limit

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(max(0, self.limit - self.count)),
            "RateLimit-Reset": str(self.reset),
        }


def consume(request: HttpRequest) -> Usage | None:
    """Count this request against its identity's limit; None when the route is exempt."""
    route = request_policy(request).rate
    if route is None or not settings.RATELIMIT_ENABLE:
        return None
    identity, api_key = _identity(request)
    usage = get_usage(
        request,
        group=f"chatter:{route}",
        key=lambda group, request: identity,
        rate=rate_for(route, api_key),
        increment=True,
    )
    if usage is None:
        return None
    return Usage(route, usage["limit"], usage["count"], max(1, usage["time_left"]))


def _record_limited(request: HttpRequest, usage: Usage) -> None:
    from accounts.services import security_event_record

    security_event_record(event="security.rate_limited", request=request, audit=False)


def rate_limited_response(usage: Usage, request: HttpRequest) -> HttpResponse:
    _record_limited(request, usage)
    return error_response(
        429,
        "rate_limited",
        f"Rate limit exceeded: {usage.limit} requests per window on {usage.route} routes. "
        f"Retry in {usage.reset} s.",
        details={"limit": usage.limit, "class": usage.route, "retry_after": usage.reset},
        headers={"Retry-After": str(usage.reset), **usage.headers()},
    )


class RateLimitMiddleware(GateMiddleware):
    """Admits or refuses every /api/ request before any view runs; adds RateLimit-* headers."""

    def check(self, request: HttpRequest) -> HttpResponse | None:
        if not request.path.startswith("/api/"):
            return None
        try:
            usage = consume(request)
        except Exception:
            # The counters' store (the shared cache: PostgreSQL or Redis) cannot be reached.
            if settings.CHATTER_RATE_LIMITS_FAIL_OPEN:
                logger.warning("rate limiter unavailable, admitting the request", exc_info=True)
                return None
            logger.error("rate limiter unavailable, refusing the request", exc_info=True)
            return error_response(
                503,
                "rate_limiter_unavailable",
                "Requests cannot be counted against their rate limit right now (its store "
                "is unreachable); retry shortly.",
                headers={"Retry-After": "5"},
            )
        request._chatter_rate_usage = usage  # type: ignore[attr-defined]
        if usage is not None and usage.exceeded:
            return rate_limited_response(usage, request)
        return None

    def decorate(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        usage = getattr(request, "_chatter_rate_usage", None)
        if usage is not None:
            for name, value in usage.headers().items():
                response.setdefault(name, value)
        return response
