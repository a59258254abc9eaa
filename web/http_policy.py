"""What each route declares about its requests (``RoutePolicy``: rate-limit class, uploads),
response headers Django does not set itself (CSP, Permissions-Policy), request size limits
that answer 413 before a body is read, and a nesting limit on JSON bodies checked before
anything parses them."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, TypeVar

from django.conf import settings
from django.core import checks
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, ResolverMatch, URLResolver, get_resolver, resolve
from ninja.operation import PathView

from core.errors import error_response
from web.middleware import GateMiddleware, _SyncAndAsync

Declared = TypeVar("Declared", bound=Callable[..., Any])


@dataclass(frozen=True)
class RoutePolicy:
    """What a view declares about its requests, read by the middleware before it runs.

    ``rate``: its rate-limit class (a key of ``CHATTER_RATE_LIMITS``), None for routes that
    are not counted (probes). ``uploads``: it takes file uploads, so its bodies may reach
    ``CHATTER_MAX_UPLOAD_BYTES`` instead of ``CHATTER_MAX_REQUEST_BYTES``. ``methods``: the
    methods it covers (empty: all); the others get the default policy.
    """

    rate: str | None = "default"
    uploads: bool = False
    methods: frozenset[str] = field(default_factory=frozenset)

    def covers(self, method: str) -> bool:
        return not self.methods or method.upper() in self.methods


# Every route that declares nothing: counted in the default class, no uploads.
DEFAULT_POLICY = RoutePolicy()
# Functions and methods that declared a policy (the system check finds the unreached ones).
declared_policies: list[tuple[Callable[..., Any], RoutePolicy]] = []


def route_policy(
    *, rate: str | None = "default", uploads: bool = False, methods: Iterable[str] = ()
) -> Callable[[Declared], Declared]:
    """Declare a view's policy: on a Ninja operation, a DRF handler or action (``methods``
    when it serves several and not all of them share it), or a view class. DRF view classes
    may instead say ``route_policy = RoutePolicy(...)``."""
    policy = RoutePolicy(rate, uploads, frozenset(m.upper() for m in methods))

    def declare(view: Declared) -> Declared:
        view.route_policy = policy  # type: ignore[attr-defined]
        declared_policies.append((view, policy))
        return view

    return declare


def _ninja_path_view(view: Callable[..., Any]) -> PathView | None:
    """The Ninja PathView behind a URL's view (a bound method, or a closure over it)."""
    owner = getattr(view, "__self__", None)
    if owner is None:
        cells = getattr(view, "__closure__", None) or ()
        owner = next(
            (c.cell_contents for c in cells if isinstance(c.cell_contents, PathView)), None
        )
    return owner if isinstance(owner, PathView) else None


def _declarers(view: Callable[..., Any], method: str) -> list[Any]:
    """Where the policy for ``method`` on this URL's view is declared, most specific first."""
    cls = getattr(view, "cls", None)  # a DRF view
    if cls is not None:
        actions = getattr(view, "actions", None)  # a viewset's route: method -> action
        handler = actions.get(method.lower()) if actions is not None else method.lower()
        return [getattr(cls, handler, None) if handler else None, cls]
    path_view = _ninja_path_view(view)
    if path_view is not None:
        return [op.view_func for op in path_view.operations if method.upper() in op.methods]
    return [view, getattr(view, "view_class", None)]


def view_policy(view: Callable[..., Any], method: str) -> RoutePolicy:
    """The policy a URL's view declares for ``method``, else the default."""
    for declarer in _declarers(view, method):
        policy = getattr(declarer, "route_policy", None)
        if isinstance(policy, RoutePolicy) and policy.covers(method):
            return policy
    return DEFAULT_POLICY


def path_policy(method: str, path: str, urlconf: str | None = None) -> RoutePolicy:
    """The policy of the view ``path`` resolves to (the default for paths that resolve to
    none: they answer 404)."""
    try:
        match = resolve(path, urlconf=urlconf)
    except Resolver404:
        return DEFAULT_POLICY
    return view_policy(match.func, method)


def request_match(request: HttpRequest) -> ResolverMatch | None:
    """The view the request's path resolves to (None: no view, a 404), resolved once per
    path: the ASGI handler (is the view async?), the route policy and Django's handler
    each need it, and a resolve walks the URL patterns (a failed include builds the list
    of everything it tried). A middleware that rewrites the path gets a new resolve."""
    key = (request.path_info, getattr(request, "urlconf", None))
    cached = getattr(request, "_chatter_match", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        match: ResolverMatch | None = resolve(key[0], urlconf=key[1])
    except Resolver404:
        match = None
    request._chatter_match = (key, match)  # type: ignore[attr-defined]
    return match


def request_policy(request: HttpRequest) -> RoutePolicy:
    """This request's route policy, resolved once (the middlewares run before the view)."""
    key = (request.method or "GET", request.path_info)
    cached = getattr(request, "_chatter_route_policy", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    match = request_match(request)
    policy = DEFAULT_POLICY if match is None else view_policy(match.func, key[0])
    request._chatter_route_policy = (key, policy)  # type: ignore[attr-defined]
    return policy


def _view_methods(view: Callable[..., Any]) -> list[str]:
    # HEAD and OPTIONS follow GET and the framework's own answer: not operations of their own.
    actions = getattr(view, "actions", None)
    if actions is not None:
        return sorted(m.upper() for m in actions if m not in ("head", "options"))
    cls = getattr(view, "cls", None)
    if cls is not None:
        return sorted(
            m.upper()
            for m in cls.http_method_names
            if m not in ("head", "options") and hasattr(cls, m)
        )
    path_view = _ninja_path_view(view)
    if path_view is not None:
        return sorted({m.upper() for op in path_view.operations for m in op.methods})
    return ["GET"]


def api_route_policies() -> list[tuple[str, str, Callable[..., Any], RoutePolicy]]:
    """(route, method, view, policy) for every operation under /api/, in URL-conf order."""
    found: list[tuple[str, str, Callable[..., Any], RoutePolicy]] = []

    def walk(patterns: Iterable[Any], prefix: str) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
            elif route.startswith("api/"):
                for method in _view_methods(pattern.callback):
                    policy = view_policy(pattern.callback, method)
                    found.append((route, method, pattern.callback, policy))

    walk(get_resolver().url_patterns, "")
    return found


@checks.register()
def check_route_policies(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Every API operation has a usable policy, and every declared one applies somewhere."""
    errors: list[checks.CheckMessage] = []
    reached: set[int] = set()
    for route, method, view, policy in api_route_policies():
        if policy.rate is not None and policy.rate not in settings.CHATTER_RATE_LIMITS:
            errors.append(
                checks.Error(
                    f"{method} /{route}: rate class {policy.rate!r} is not a key of "
                    "CHATTER_RATE_LIMITS.",
                    id="chatter.E101",
                )
            )
        for declarer in _declarers(view, method):
            if getattr(declarer, "route_policy", None) is policy:
                reached.add(id(declarer))
    for declarer, policy in declared_policies:
        if id(declarer) not in reached:
            errors.append(
                checks.Error(
                    f"{getattr(declarer, '__qualname__', declarer)} declares {policy} but no "
                    "API route reaches it (not a routed handler, or none of its methods).",
                    id="chatter.E102",
                )
            )
    return errors


class SecurityHeadersMiddleware(_SyncAndAsync):
    def after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if settings.CHATTER_CSP:
            response.setdefault("Content-Security-Policy", settings.CHATTER_CSP)
        response.setdefault("Permissions-Policy", settings.CHATTER_PERMISSIONS_POLICY)
        return response


def body_limit(path: str, method: str = "POST") -> int:
    """The largest body a request may send to ``path``: larger on routes taking uploads."""
    if path_policy(method, path).uploads:
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
        limit = (
            settings.CHATTER_MAX_UPLOAD_BYTES
            if request_policy(request).uploads
            else settings.CHATTER_MAX_REQUEST_BYTES
        )
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
