"""Outbound HTTP that cannot be pointed at the inside: the one SSRF guard (agents' `http_get`,
webhooks' deliveries).

A URL is fetched only if it is http(s), carries no credentials, and **every** address its host
resolves to is public: loopback, private, link-local (the cloud metadata address
169.254.169.254), shared (100.64/10), multicast, reserved, unspecified and documentation
ranges are refused, and so are IPv6 forms that embed such an IPv4 address (IPv4-mapped
``::ffff:127.0.0.1``, NAT64 ``64:ff9b::/96``, 6to4, Teredo). Hosts written as numbers in other
bases (``2130706433``, ``0177.0.0.1``) are resolved like any name (by the C library, which
reads them as IPv4), so the address check sees what a socket would connect to.

The request then connects to the checked address itself (no second DNS lookup, so a name
cannot resolve to a public address for the check and a private one for the connection): the
URL is rewritten to the IP, the ``Host`` header and the TLS server name (SNI, and the name the
certificate is verified against) stay the original host's. Redirects are followed by hand, at
most ``max_redirects``, each hop checked again, or not at all (``follow_redirects=False``:
the 3xx is the answer; webhooks). The body is read up to ``max_bytes`` and the whole
exchange (every hop) is bounded by ``timeout`` seconds.

``fetch`` GETs; ``send`` takes any method and a body (webhooks POST through it) and may reuse
a caller's client (``guarded_client``) for keep-alive connections to the checked address.

Operators allow private targets explicitly (``CHATTER_OUTBOUND_ALLOWLIST``, or ``allowlist=``):
entries are IPs, CIDRs or host names, each optionally with ``:port`` (IPv6 in brackets:
``[::1]:8080``).
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
from django.conf import settings

from core.errors import ApplicationError
from core.validation import InvalidInput, validate_url

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_REDIRECTS = {301, 302, 303, 307, 308}


class OutboundRefused(ApplicationError):
    """The target is not one Chatter may connect to (the message says why)."""

    status = 400
    code = "outbound_refused"


class OutboundFailed(ApplicationError):
    """The target was allowed but the exchange failed (connection, timeout, too many hops)."""

    status = 502
    code = "outbound_failed"


@dataclass(frozen=True)
class _Entry:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    host: str | None
    port: int | None


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (``address``) and who to say we are talking to."""

    url: str
    scheme: str
    host: str
    port: int
    address: IPAddress


@dataclass
class FetchResult:
    url: str  # the last hop's URL
    status: int
    headers: dict[str, str]
    body: bytes
    truncated: bool
    redirects: list[str] = field(default_factory=list)
    address: str = ""  # the checked address the last hop connected to

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client's address
    return None


def address_is_public(address: IPAddress) -> bool:
    """True for an address on the public internet (and for IPv6 forms whose embedded IPv4
    address is public); False for everything an SSRF guard must keep callers away from."""
    embedded = _embedded_ipv4(address)
    if embedded is not None and not address_is_public(embedded):
        return False
    return address.is_global and not (
        address.is_multicast
        or address.is_reserved
        or address.is_loopback
        or address.is_link_local
        or address.is_private
        or address.is_unspecified
    )


def _parse_entry(raw: str) -> _Entry:
    text = raw.strip().lower()
    port: int | None = None
    if text.startswith("["):  # [v6] or [v6]:port
        inside, _, rest = text[1:].partition("]")
        text = inside
        if rest.startswith(":"):
            port = int(rest[1:])
    elif text.count(":") == 1:  # host:port or v4:port (a bare v6 has several colons)
        text, _, port_text = text.partition(":")
        port = int(port_text)
    try:
        return _Entry(ipaddress.ip_network(text, strict=False), None, port)
    except ValueError:
        return _Entry(None, text.rstrip("."), port)


def _entries(allowlist: Iterable[str] | None) -> list[_Entry]:
    raw = allowlist if allowlist is not None else settings.CHATTER_OUTBOUND_ALLOWLIST
    entries = []
    for item in raw:
        if item and item.strip():
            try:
                entries.append(_parse_entry(item))
            except ValueError as exc:
                raise ApplicationError(
                    f"Outbound allowlist entry {item!r} is not a host, IP or CIDR[:port].",
                    code="outbound_misconfigured",
                    status=500,
                ) from exc
    return entries


def _allowed(entries: Sequence[_Entry], host: str, port: int, address: IPAddress) -> bool:
    for entry in entries:
        if entry.port is not None and entry.port != port:
            continue
        if entry.host is not None and entry.host == host:
            return True
        if (
            entry.network is not None
            and entry.network.version == address.version
            and address in entry.network
        ):
            return True
    return False


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (an IP literal resolves to itself)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise OutboundFailed(
            f"The host {host!r} does not resolve.", code="outbound_unresolvable"
        ) from exc
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        # Drop an IPv6 zone ("fe80::1%eth0"): the address itself is what is checked.
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise OutboundFailed(f"The host {host!r} does not resolve.", code="outbound_unresolvable")
    return addresses


def check_url(url: str, *, allowlist: Iterable[str] | None = None) -> Target:
    """The checked target of ``url``; raises OutboundRefused unless every address is allowed."""
    try:
        url = validate_url(url)
    except InvalidInput as exc:
        raise OutboundRefused(str(exc), details={"url": [str(exc)]}) from exc
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".").lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    entries = _entries(allowlist)
    addresses = resolve(host, port)
    # One refused address refuses the host: a name with a public and a private address
    # would otherwise be a coin toss away from the inside.
    for address in addresses:
        if not address_is_public(address) and not _allowed(entries, host, port, address):
            message = f"{host!r} resolves to {address}, a non-public address."
            raise OutboundRefused(message, details={"url": [message]})
    return Target(url=url, scheme=parts.scheme, host=host, port=port, address=addresses[0])


def _pinned_request(
    client: httpx.Client,
    target: Target,
    headers: dict[str, str],
    method: str = "GET",
    content: bytes | None = None,
) -> httpx.Request:
    parts = urlsplit(target.url)
    ip = target.address
    netloc = f"[{ip}]:{target.port}" if ip.version == 6 else f"{ip}:{target.port}"
    default_port = 443 if target.scheme == "https" else 80
    host_header = target.host if target.port == default_port else f"{target.host}:{target.port}"
    if ":" in target.host:  # an IPv6 literal as the host
        host_header = f"[{target.host}]" + (
            "" if target.port == default_port else f":{target.port}"
        )
    pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    return client.build_request(
        method,
        pinned,
        headers={**headers, "Host": host_header},
        content=content,
        # The TLS server name and certificate check are the original host's, not the IP's.
        extensions={"sni_hostname": target.host},
    )


def guarded_client(*, timeout: float = 10.0, max_connections: int = 10) -> httpx.Client:
    """A client for ``send(client=...)``: no redirects of its own, no proxy from the
    environment (it could relay to where the guard said no). Its connections are pooled by
    address, so use one client per target host (a TLS connection is for one server name)."""
    return httpx.Client(
        follow_redirects=False,
        trust_env=False,
        timeout=timeout,
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
    )


def fetch(
    url: str,
    *,
    max_bytes: int = 1024 * 1024,
    timeout: float = 10.0,
    max_redirects: int = 3,
    headers: dict[str, str] | None = None,
    allowlist: Iterable[str] | None = None,
) -> FetchResult:
    """GET ``url`` through the guard (see the module's docstring); the body is capped at
    ``max_bytes`` (``truncated`` says when more was sent)."""
    return send(
        "GET",
        url,
        max_bytes=max_bytes,
        timeout=timeout,
        max_redirects=max_redirects,
        headers=headers,
        allowlist=allowlist,
    )


def send(
    method: str,
    url: str,
    *,
    content: bytes | None = None,
    max_bytes: int = 1024 * 1024,
    timeout: float = 10.0,
    follow_redirects: bool = True,
    max_redirects: int = 3,
    headers: dict[str, str] | None = None,
    allowlist: Iterable[str] | None = None,
    client: httpx.Client | None = None,
) -> FetchResult:
    """``method`` ``url`` (with ``content``) through the guard: every hop's host resolved and
    checked, the connection made to the checked address. With ``follow_redirects=False`` a
    3xx is returned as it is. ``client``: a ``guarded_client`` to reuse (else one per call)."""
    deadline = time.monotonic() + timeout
    redirects: list[str] = []
    current = url
    own_client = client is None
    active = client or guarded_client(timeout=timeout)
    try:
        while True:
            target = check_url(current, allowlist=allowlist)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise OutboundFailed("The request took too long.", code="outbound_timeout")
            request = _pinned_request(active, target, headers or {}, method, content)
            request.extensions["timeout"] = httpx.Timeout(remaining).as_dict()
            try:
                response = active.send(request, stream=True)
            except httpx.TimeoutException as exc:
                raise OutboundFailed("The request took too long.", code="outbound_timeout") from exc
            except httpx.HTTPError as exc:
                raise OutboundFailed(f"The request failed: {exc}") from exc
            try:
                location = response.headers.get("location")
                if follow_redirects and response.status_code in _REDIRECTS and location:
                    if len(redirects) >= max_redirects:
                        raise OutboundFailed(
                            f"More than {max_redirects} redirects.", code="outbound_redirects"
                        )
                    current = urljoin(target.url, location)
                    redirects.append(current)
                    continue
                body, truncated = _read_capped(response, max_bytes, deadline)
                return FetchResult(
                    url=target.url,
                    status=response.status_code,
                    headers=dict(response.headers),
                    body=body,
                    truncated=truncated,
                    redirects=redirects,
                    address=str(target.address),
                )
            finally:
                response.close()
    finally:
        if own_client:
            active.close()


def _read_capped(response: httpx.Response, max_bytes: int, deadline: float) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_bytes():
            if time.monotonic() > deadline:
                raise OutboundFailed("The response took too long.", code="outbound_timeout")
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                return b"".join(chunks)[:max_bytes], True
    except httpx.TimeoutException as exc:
        raise OutboundFailed("The response took too long.", code="outbound_timeout") from exc
    except httpx.HTTPError as exc:
        raise OutboundFailed(f"Reading the response failed: {exc}") from exc
    return b"".join(chunks), False
