"""Standard Webhooks signing (https://www.standardwebhooks.com/, spec 1.0).

A delivery carries ``webhook-id`` (the event's id: the same on every attempt, so receivers
can drop duplicates), ``webhook-timestamp`` (the attempt's time, integer seconds: receivers
refuse old ones, which stops replays) and ``webhook-signature``: space-separated
``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` entries, one per secret (two while a
rotated secret's overlap lasts). The secret is ``whsec_`` + base64 of its key bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # the spec asks for 24 to 64


def secret_new() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(secret: str, *, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` entry of the ``webhook-signature`` header."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets_: list[str], *, msg_id: str, timestamp: int, body: bytes) -> str:
    return " ".join(
        signature(secret, msg_id=msg_id, timestamp=timestamp, body=body) for secret in secrets_
    )


def payload_bytes(payload: dict[str, Any]) -> bytes:
    """The body of a delivery: compact JSON, UTF-8. The same event always gives the same
    bytes (its data comes back from jsonb in one key order), which are what is signed."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
