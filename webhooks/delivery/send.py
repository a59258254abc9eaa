"""Sending one attempt: signed over the exact bytes sent, through the SSRF guard."""

from __future__ import annotations

import email.utils
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.utils import timezone

from core.netguard import OutboundFailed, OutboundRefused, guarded_client, send
from webhooks.delivery.claim import Claimed
from webhooks.signing import payload_bytes, signature_header

logger = logging.getLogger("chatter.webhooks")

USER_AGENT = "Chatter-Webhooks/1.0"


@dataclass
class Outcome:
    claimed: Claimed
    started_at: datetime
    duration_ms: int = 0
    status_code: int | None = None
    succeeded: bool = False
    excerpt: str = ""
    error: str = ""
    address: str = ""
    timestamp: int | None = None
    retry_after: float | None = None
    gone: bool = False
    health: bool = True  # whether it says anything about the endpoint (a lost worker does not)


def _retry_after(headers: dict[str, str]) -> float | None:
    """Seconds a 429/503's ``Retry-After`` asks for (delta-seconds or an HTTP date)."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - timezone.now()).total_seconds())


def delivery_send(claimed: Claimed, *, client: httpx.Client | None = None) -> Outcome:
    """POST one attempt (signed over the exact bytes sent) and say how it went. Never raises
    for anything the receiver or the network does."""
    body = payload_bytes(claimed.payload)
    timestamp = int(time.time())
    headers = {
        **claimed.headers,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": claimed.event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(
            claimed.secrets, msg_id=claimed.event_id, timestamp=timestamp, body=body
        ),
    }
    outcome = Outcome(claimed=claimed, started_at=timezone.now(), timestamp=timestamp)
    started = time.monotonic()
    try:
        result = send(
            "POST",
            claimed.url,
            content=body,
            headers=headers,
            timeout=float(claimed.timeout),
            follow_redirects=False,
            max_bytes=settings.CHATTER_WEBHOOK_RESPONSE_MAX_BYTES,
            allowlist=settings.CHATTER_WEBHOOK_ALLOWED_HOSTS,
            client=client,
        )
    except OutboundRefused as exc:
        outcome.error = f"Refused by the SSRF guard: {exc.message}"
    except OutboundFailed as exc:
        outcome.error = exc.message
    except Exception as exc:  # a bug must cost this attempt, not the worker's other sends
        logger.exception("sending delivery %s failed", claimed.delivery_id)
        outcome.error = f"{type(exc).__name__}: {exc}"
    else:
        status = result.status
        outcome.status_code = status
        outcome.address = result.address
        outcome.excerpt = result.body.decode("utf-8", errors="replace")[
            : settings.CHATTER_WEBHOOK_RESPONSE_EXCERPT_CHARS
        ]
        outcome.succeeded = 200 <= status < 300
        if 300 <= status < 400:
            location = result.headers.get("location", "")
            outcome.error = f"HTTP {status}: redirects are not followed (to {location!r})"[:2000]
        elif not outcome.succeeded:
            outcome.error = f"HTTP {status}"
        if status in (429, 503):
            outcome.retry_after = _retry_after(result.headers)
        outcome.gone = status == 410
    outcome.duration_ms = int((time.monotonic() - started) * 1000)
    return outcome


class SendClients:
    """Guarded clients for this run, one per sending thread and target host: keep-alive to
    the checked address (a TLS connection belongs to one server name, so hosts never share
    one), and no connection pool shared between threads (under load a shared sync pool
    handed sockets another thread had closed: EBADF)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.clients: dict[tuple[int, str, str, int | None], httpx.Client] = {}

    def get(self, url: str) -> httpx.Client:
        parts = urlsplit(url)
        key = (threading.get_ident(), parts.scheme, (parts.hostname or "").lower(), parts.port)
        with self.lock:
            client = self.clients.get(key)
            if client is None:
                client = self.clients[key] = guarded_client(max_connections=1)
            return client

    def close(self) -> None:
        with self.lock:
            for client in self.clients.values():
                client.close()
            self.clients.clear()


def send_with_clients(claimed: Claimed, clients: SendClients) -> Outcome:
    return delivery_send(claimed, client=clients.get(claimed.url))
