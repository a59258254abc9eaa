"""Threat scoring for SQL injection, XSS and path traversal.

Why and how: docs/architecture.md, "web/threats.py".
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any
from urllib.parse import unquote

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, QueryDict
from django.http.multipartparser import MultiPartParserError

from core.asyncdb import release_connections
from core.errors import ApplicationError, error_response
from core.validation import normalize_line
from web.middleware import GateMiddleware

SQLI = "sql_injection"
XSS = "xss"
TRAVERSAL = "path_traversal"

_I = re.IGNORECASE
# (kind, weight, pattern). Weights: one strong signal crosses the free-text threshold alone;
# weak ones (an SQL keyword, a tag) only count in combination.
SIGNATURES: list[tuple[str, int, re.Pattern[str]]] = [
    # SQL: a quote or number breaking out, then a tautology, a comment or a second statement.
    (
        SQLI,
        70,
        re.compile(
            r"['\"`)]\s*(?:or|and|\|\||&&)\s*[\s'\"(]*\w+['\"]?\s*(?:=|<>|!=|like)\s*['\"(]?\s*\w*",
            _I,
        ),
    ),
    (SQLI, 60, re.compile(r"\b(?:or|and)\s+['\"]?(\d+)['\"]?\s*=\s*['\"]?\1\b", _I)),
    (SQLI, 60, re.compile(r"['\"`)]\s*;?\s*(?:--|#|/\*)", _I)),
    (
        SQLI,
        60,
        re.compile(
            r"['\"`)]\s*;\s*(?:drop|delete|truncate|alter|insert|update|exec|shutdown|create|select)\b",
            _I,
        ),
    ),
    (SQLI, 50, re.compile(r"['\"`)]\s*union\b(?:\s+all)?\s+select\b", _I)),
    (
        SQLI,
        50,
        re.compile(
            r"\bunion\b(?:\s+all|\s+distinct)?\s+select\b(?:\s+(?:null|\d+|@@\w+|char\())", _I
        ),
    ),
    (SQLI, 60, re.compile(r"['\"]\s*or\s*['\"]['\"]\s*=", _I)),
    (
        SQLI,
        60,
        re.compile(
            r"^\s*\d+\s*;\s*(?:drop|delete|truncate|shutdown|alter)\s+(?:table|database|from|user)\b",
            _I,
        ),
    ),
    (
        SQLI,
        50,
        re.compile(
            r"\b(?:pg_sleep|sleep|benchmark|waitfor\s+delay|dbms_pipe\.receive_message)\s*\(?\s*['\"\d]",
            _I,
        ),
    ),
    (
        SQLI,
        40,
        re.compile(
            r"\b(?:xp_cmdshell|load_file|into\s+(?:out|dump)file|utl_http|sp_executesql)\b", _I
        ),
    ),
    (
        SQLI,
        30,
        re.compile(
            r"\b(?:information_schema\.\w+|pg_catalog\.\w+|sysobjects|mysql\.user|@@version)\b", _I
        ),
    ),
    (SQLI, 30, re.compile(r"\b(?:extractvalue|updatexml)\s*\(", _I)),
    (SQLI, 20, re.compile(r"\bor\s+1\s*=\s*1\b|\bor\s+true\b", _I)),
    (SQLI, 40, re.compile(r"^\s*(?:admin|root)?['\"]\s*(?:--|#|/\*|or\b)", _I)),
    # XSS: executable markup or script URLs.
    (
        XSS,
        70,
        re.compile(
            r"<\s*script\b[^>]*>[^<]*(?:alert|prompt|confirm|document\.|window\.|eval|fetch|location|src\s*=)",
            _I,
        ),
    ),
    (XSS, 40, re.compile(r"<\s*script\b[^>]*\bsrc\s*=\s*['\"]?(?:https?:)?//", _I)),
    (XSS, 30, re.compile(r"<\s*/?\s*script\b", _I)),
    (
        XSS,
        60,
        re.compile(
            r"<[^>]+\s(?:on[a-z]{3,20})\s*=\s*['\"]?[^'\"\s>]*(?:alert|prompt|confirm|eval|document\.|window\.|location|fetch|\(|`)",
            _I,
        ),
    ),
    (
        XSS,
        40,
        re.compile(
            r"<\s*(?:img|svg|body|iframe|video|audio|input|details|marquee|object|embed|math|a|div|style|link|meta|form)\b[^>]*\bon[a-z]{3,20}\s*=",
            _I,
        ),
    ),
    (XSS, 60, re.compile(r"(?:javascript|vbscript|livescript)\s*:", _I)),
    (XSS, 50, re.compile(r"data\s*:\s*text/html|srcdoc\s*=|expression\s*\(|-moz-binding", _I)),
    (XSS, 40, re.compile(r"<\s*(?:iframe|object|embed|base|meta\s+http-equiv)\b", _I)),
    (
        XSS,
        30,
        re.compile(r"\b(?:alert|prompt|confirm)\s*(?:\(|`)\s*(?:document|\d|['\"`]|String\.)", _I),
    ),
    (
        XSS,
        30,
        re.compile(r"document\.(?:cookie|domain|write)|window\.location|\.innerHTML\s*=", _I),
    ),
    (XSS, 30, re.compile(r"\{\{.*constructor.*\}\}|\$\{.*\}", _I)),
    # Path traversal: dot-dot segments (raw or encoded) and the files they aim for.
    (TRAVERSAL, 40, re.compile(r"(?:^|[\\/=\s'\"])\.\.[\\/]")),
    (TRAVERSAL, 60, re.compile(r"\.{4}[\\/]{2}|[\\/]\.\.[\\/]\.\.[\\/]")),
    (TRAVERSAL, 40, re.compile(r"(?:\.\.[\\/]){2,}")),
    (
        TRAVERSAL,
        70,
        re.compile(r"%2e%2e|%252e|\.\.%2f|\.\.%5c|%c0%ae|%c0%af|%c1%9c|\.\.%00|%uff0e", _I),
    ),
    (
        TRAVERSAL,
        40,
        re.compile(
            r"/etc/(?:passwd|shadow|hosts|group)\b|/proc/self/|\bboot\.ini\b|\bwin\.ini\b", _I
        ),
    ),
    (TRAVERSAL, 60, re.compile(r"^[a-z]:\\(?:windows|winnt|boot)\\", _I)),
    (TRAVERSAL, 30, re.compile(r"%00|\x00")),
    (TRAVERSAL, 60, re.compile(r"(?:%00|\x00)\.\w{1,5}$")),
    (TRAVERSAL, 60, re.compile(r"^(?:file|php|zip|phar|expect|glob|data)://", _I)),
]


@dataclass(frozen=True)
class Assessment:
    score: int
    kinds: tuple[str, ...] = field(default=())

    def __bool__(self) -> bool:
        return self.score > 0

    @property
    def label(self) -> str:
        return ", ".join(kind.replace("_", " ") for kind in self.kinds) or "none"


def _variants(value: str) -> set[str]:
    seen = {value}
    decoded = value
    for _ in range(2):  # double encoding is common; deeper is not worth the time
        decoded = unquote(decoded)
        seen.add(decoded)
    seen.add(html.unescape(decoded))
    return seen


def assess(value: str) -> Assessment:
    """The risk score of one value (0-100) and the kinds of attack it resembles."""
    if len(value) < 3:
        return Assessment(0)
    variants = _variants(value[:20_000])
    by_kind: dict[str, int] = {}
    for kind, weight, pattern in SIGNATURES:
        if any(pattern.search(text) for text in variants):
            by_kind[kind] = by_kind.get(kind, 0) + weight
    if not by_kind:
        return Assessment(0)
    kinds = tuple(sorted(by_kind, key=lambda k: -by_kind[k]))
    return Assessment(min(100, max(by_kind.values())), kinds)


# --- middleware ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    field: str
    structured: bool
    assessment: Assessment


def _structured_name(name: str) -> bool:
    last = name.rsplit(".", 1)[-1].split("[", 1)[0].lower()
    fields = settings.CHATTER_THREAT_STRUCTURED_FIELDS
    return last in fields or last.rsplit("_", 1)[-1] in ("url", "uri", "path", "filename", "slug")


def _walk(value: Any, name: str, out: list[tuple[str, str, bool]], *, values: bool = True) -> None:
    """(field, text, structured) for every string in a JSON body (only its object keys
    unless ``values``). Object keys are identifiers, so always structured; values by their
    field's name."""
    if isinstance(value, dict):
        for key, item in list(value.items())[:500]:
            key = str(key)
            out.append((f"{name}.{key}" if name else key, key, True))
            _walk(item, f"{name}.{key}" if name else key, out, values=values)
    elif isinstance(value, list):
        for index, item in enumerate(value[:500]):
            _walk(item, f"{name}[{index}]", out, values=values)
    elif isinstance(value, str) and values:
        out.append((name, value, _structured_name(name)))


def _form_data(request: HttpRequest) -> tuple[Any, Any]:
    """A form body's fields and files. Django parses them for POST only (once; the view
    reuses them); DRF parses PUT and PATCH forms itself, so those are parsed here from a
    copy of the body, which stays readable for DRF."""
    if request.method == "POST":
        return request.POST, request.FILES
    body = request.body
    if request.content_type == "application/x-www-form-urlencoded":
        return QueryDict(body, encoding=request.encoding), {}
    return request.parse_file_upload(request.META, BytesIO(body))


def request_values(request: HttpRequest) -> list[tuple[str, str, bool]]:
    """Everything a client chose in this request: path, query, body fields, file names."""
    values: list[tuple[str, str, bool]] = [("path", request.path, True)]
    for key, items in request.GET.lists():
        values.append((f"query:{key}", key, True))
        values.extend((f"query:{key}", item, _structured_name(key)) for item in items)
    if request.method not in ("POST", "PUT", "PATCH"):
        return values
    content_type = request.content_type or ""
    if content_type == "application/json" or content_type.endswith("+json"):
        try:
            body = json.loads(request.body or b"null")
        except ValueError:
            return values  # the framework answers a malformed body with its own 400
        _walk(body, "", values)
    elif content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        try:
            form, files = _form_data(request)
        except MultiPartParserError:
            return values  # the view answers a malformed body with its own 4xx
        for key, items in form.lists():
            values.append((key, key, True))
            values.extend((key, item, _structured_name(key)) for item in items)
        for key, upload in files.items():
            values.append((f"{key}.filename", upload.name or "", True))
    return values


def unstorable_fields(values: list[tuple[str, str, bool]]) -> dict[str, list[str]]:
    """Fields PostgreSQL would refuse to store (NUL, lone surrogates): a 400 for every app
    here, rather than a 500 from the database later."""
    fields: dict[str, list[str]] = {}
    for name, text, _ in values:
        if "\x00" in text:
            fields.setdefault(_storable(name), []).append("NUL characters are not allowed.")
            continue
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            fields.setdefault(_storable(name), []).append("Invalid Unicode (lone surrogate).")
    return fields


def scan(values: list[tuple[str, str, bool]]) -> list[Finding]:
    findings = []
    flag_at = settings.CHATTER_THREAT_FLAG_SCORE
    refuse_at = settings.CHATTER_THREAT_REFUSE_SCORE
    for name, text, structured in values:
        result = assess(text)
        if result.score >= (refuse_at if structured else flag_at):
            findings.append(Finding(name, structured, result))
    return findings


def _storable(text: str) -> str:
    """Text PostgreSQL's jsonb accepts: no NUL or other controls, no lone surrogates."""
    return normalize_line(text).encode("utf-8", "replace").decode()


def _record(request: HttpRequest, findings: list[Finding], refused: bool) -> None:
    from accounts.authentication import api_key_from_request
    from accounts.services import security_event_record

    api_key = api_key_from_request(request)
    user = getattr(request, "user", None)
    actor = api_key.user if api_key is not None else user
    security_event_record(
        event="security.threat_refused" if refused else "security.threat_flagged",
        request=request,
        actor=actor if actor is not None and actor.is_authenticated else None,
        details={
            "method": request.method,
            "path": _storable(request.path[:200]),
            "findings": [
                {
                    "field": _storable(f.field[:100]),
                    "structured": f.structured,
                    "score": f.assessment.score,
                    "kinds": list(f.assessment.kinds),
                }
                for f in findings[:20]
            ],
        },
    )


def inspect(request: HttpRequest, *, record: Callable[..., None] = _record) -> HttpResponse | None:
    """Refuse a request whose structured fields look like an attack; flag free text
    (``record`` stores the findings)."""
    if not request.path.startswith("/api/"):
        return None
    try:
        values = request_values(request)
    except RequestDataTooBig:
        return error_response(
            413, "payload_too_large", "The request body is larger than this server accepts."
        )
    unstorable = unstorable_fields(values)
    if unstorable:
        return error_response(400, "invalid_characters", "Text cannot be stored.", unstorable)
    if not settings.CHATTER_THREAT_DETECTION:
        return None
    findings = scan(values)
    if not findings:
        return None
    refused = [f for f in findings if f.structured]
    record(request, findings, bool(refused))
    if not refused:
        return None
    details: dict[str, list[str]] = {}
    for finding in refused:
        details.setdefault(finding.field, []).append(
            f"Refused: looks like {finding.assessment.label} (risk {finding.assessment.score})."
        )
    return error_response(
        400, "threat_detected", "The request contains values that look like an attack.", details
    )


def upload_threats_refuse(
    request: Any, fields: Mapping[str, str], objects: Mapping[str, Any] | None = None
) -> None:
    """For an upload route: refuse what the middleware cannot see in a multipart body, the
    file name as the client sent it and the keys of JSON objects sent as text parts
    (``fields``: name -> text, structured; ``objects``: name -> parsed object, keys only).

    The middleware's rules: text PostgreSQL cannot store is a 400 ``invalid_characters``;
    a value that looks like an attack is recorded as a security event and refused, 400
    ``threat_detected`` (raised as ApplicationError). ``request`` is Django's or DRF's."""
    values = [(name, text, True) for name, text in fields.items()]
    for name, value in (objects or {}).items():
        _walk(value, name, values, values=False)
    unstorable = unstorable_fields(values)
    if unstorable:
        raise ApplicationError(
            "Text cannot be stored.", code="invalid_characters", details=unstorable
        )
    if not settings.CHATTER_THREAT_DETECTION:
        return
    findings = scan(values)
    if not findings:
        return
    _record(getattr(request, "_request", request), findings, True)
    details: dict[str, list[str]] = {}
    for finding in findings:
        details.setdefault(finding.field, []).append(
            f"Refused: looks like {finding.assessment.label} (risk {finding.assessment.score})."
        )
    raise ApplicationError(
        "The request contains values that look like an attack.",
        code="threat_detected",
        details=details,
    )


_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def _record_all(findings: list[tuple[Any, ...]]) -> None:
    try:
        for args in findings:
            _record(*args)
    finally:
        release_connections()  # not held by the request's thread for the response's length


class ThreatDetectionMiddleware(GateMiddleware):
    def check(self, request: HttpRequest) -> HttpResponse | None:
        return inspect(request)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        # Under ASGI, scanning a query string or a JSON body is CPU work on a body the size
        # limit has already bounded: it runs on the loop, and only storing findings (the
        # database) goes to a thread. Form and multipart bodies (uploads) are parsed in one.
        if request.content_type in _FORM_TYPES:
            refused = await sync_to_async(self._check_released)(request)
        else:
            findings: list[tuple[Any, ...]] = []
            refused = inspect(request, record=lambda *args: findings.append(args))
            if findings:
                await sync_to_async(_record_all)(findings)
        if refused is not None:
            return refused
        return self.decorate(request, await self.get_response(request))
