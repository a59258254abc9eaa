"""The client's address: REMOTE_ADDR, or X-Forwarded-For when the peer is a trusted proxy."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from django.conf import settings
from django.http import HttpRequest

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def _networks(proxies: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(p, strict=False) for p in proxies)


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _valid(address: str | None) -> str | None:
    # Unix-socket peers and test clients have no address (or a name like "testclient").
    try:
        return str(ipaddress.ip_address(address)) if address else None
    except ValueError:
        return None


def client_ip(request: HttpRequest) -> str | None:
    """Walk X-Forwarded-For from the right while the hop is a trusted proxy; the first
    untrusted hop is the client. An untrusted peer's X-Forwarded-For is ignored: anyone
    can send that header."""
    remote = _valid(request.META.get("REMOTE_ADDR"))
    networks = _networks(tuple(settings.CHATTER_TRUSTED_PROXIES))
    if remote is None or not networks or not _trusted(remote, networks):
        return remote
    hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    for hop in reversed([h for h in hops if h]):
        if not _trusted(hop, networks):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return remote  # a garbled header: fall back to the proxy itself
    return remote
