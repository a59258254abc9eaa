"""The SSRF guard (core.netguard) against the usual attacks, with loopback servers only."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.netguard import (
    OutboundFailed,
    OutboundRefused,
    address_is_public,
    check_url,
    fetch,
)


class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}

    def do_GET(self) -> None:
        status, headers, body = self.server.routes.get(  # type: ignore[attr-defined]
            self.path, (404, {}, b"no such page")
        )
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Seen-Host", self.headers.get("Host", ""))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class LoopbackServer:
    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.routes = {}  # type: ignore[attr-defined]
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def route(self, path: str, status: int = 200, body: bytes = b"", **headers: str) -> None:
        self.server.routes[path] = (status, headers, body)  # type: ignore[attr-defined]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    running = LoopbackServer()
    yield running
    running.close()


@pytest.fixture
def second_server() -> Iterator[LoopbackServer]:
    running = LoopbackServer()
    yield running
    running.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://127.1.2.3:8080/",
        "http://[::1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://[::]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://[64:ff9b::7f00:1]/",
        "http://[2002:7f00:1::]/",
        "http://[fe80::1]/",
        "http://[fd00:ec2::254]/",
        "http://224.0.0.1/",
        "http://240.0.0.1/",
        "http://255.255.255.255/",
        "http://2130706433/",  # 127.0.0.1 as one decimal number
        "http://0x7f000001/",  # ... in hex
        "http://0177.0.0.1/",  # ... in octal
        "http://017700000001/",
        "http://127.1/",
        "http://localhost/",  # a name that resolves to loopback
        "http://LOCALHOST./",
    ],
)
def test_it_refuses_inside_addresses(url, settings):
    settings.CHATTER_OUTBOUND_ALLOWLIST = []

    with pytest.raises(OutboundRefused) as refused:
        check_url(url)

    assert refused.value.status == 400
    assert refused.value.code == "outbound_refused"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/",
        "http://user:secret@example.com/",
        "http:///nohost",
        "javascript:alert(1)",
    ],
)
def test_it_refuses_other_schemes_and_credentials(url):
    with pytest.raises(OutboundRefused):
        check_url(url)


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "93.184.216.34"],
)
def test_public_addresses_are_public(address):
    assert address_is_public(ipaddress.ip_address(address))


def test_it_refuses_a_live_loopback_server_that_is_not_allowlisted(server, settings):
    settings.CHATTER_OUTBOUND_ALLOWLIST = []
    server.route("/", body=b"secret")

    with pytest.raises(OutboundRefused):
        fetch(f"{server.base}/")
    with pytest.raises(OutboundRefused):
        fetch(f"http://localhost:{server.port}/")


def test_an_allowlisted_server_is_fetched_with_its_host_name(server):
    server.route("/page", body=b"hello from loopback", **{"Content-Type": "text/plain"})

    result = fetch(f"{server.base}/page", allowlist=[f"127.0.0.1:{server.port}"])

    assert result.status == 200
    assert result.text() == "hello from loopback"
    assert result.truncated is False
    assert result.headers["x-seen-host"] == f"127.0.0.1:{server.port}"


def test_a_host_name_entry_allows_that_name_and_keeps_it_in_the_host_header(server):
    server.route("/", body=b"named")

    result = fetch(f"http://localhost:{server.port}/", allowlist=["localhost"])

    assert result.text() == "named"
    assert result.headers["x-seen-host"] == f"localhost:{server.port}"


def test_an_allowlist_port_does_not_allow_other_ports(server):
    with pytest.raises(OutboundRefused):
        check_url(f"{server.base}/", allowlist=[f"127.0.0.1:{server.port + 1}"])


def test_a_redirect_to_loopback_from_an_allowlisted_server_is_refused(server, second_server):
    second_server.route("/internal", body=b"do not leak")
    server.route("/go", 302, Location=f"http://127.0.0.1:{second_server.port}/internal")
    server.route("/go6", 302, Location=f"http://[::1]:{server.port}/")
    server.route("/metadata", 301, Location="http://169.254.169.254/latest/meta-data/")
    server.route("/decimal", 307, Location=f"http://2130706433:{second_server.port}/internal")
    allow = [f"127.0.0.1:{server.port}"]

    for path in ("/go", "/go6", "/metadata", "/decimal"):
        with pytest.raises(OutboundRefused):
            fetch(f"{server.base}{path}", allowlist=allow)


def test_allowed_redirects_are_followed_and_checked_each_hop(server):
    server.route("/a", 302, Location="/b")
    server.route("/b", 301, Location=f"{server.base}/c")
    server.route("/c", body=b"arrived")

    result = fetch(f"{server.base}/a", allowlist=[f"127.0.0.1:{server.port}"])

    assert result.text() == "arrived"
    assert result.redirects == [f"{server.base}/b", f"{server.base}/c"]


def test_more_than_three_redirects_fail(server):
    for hop in range(5):
        server.route(f"/{hop}", 302, Location=f"/{hop + 1}")
    server.route("/5", body=b"too far")

    with pytest.raises(OutboundFailed) as failed:
        fetch(f"{server.base}/0", allowlist=[f"127.0.0.1:{server.port}"])

    assert failed.value.code == "outbound_redirects"


def test_the_body_is_capped(server):
    server.route("/big", body=b"x" * 100_000)

    result = fetch(f"{server.base}/big", allowlist=["127.0.0.0/8"], max_bytes=1000)

    assert result.truncated is True
    assert result.body == b"x" * 1000


def test_a_refused_connection_is_an_outbound_failure_not_a_crash():
    closed = LoopbackServer()
    port = closed.port
    closed.close()  # nothing listens there now

    with pytest.raises(OutboundFailed):
        fetch(f"http://127.0.0.1:{port}/", allowlist=[f"127.0.0.1:{port}"])


def test_an_unresolvable_name_is_an_outbound_failure():
    with pytest.raises(OutboundFailed) as failed:
        check_url("http://no-such-host.invalid/")

    assert failed.value.code == "outbound_unresolvable"


def test_it_connects_to_the_checked_address_without_a_second_lookup(server, monkeypatch):
    """DNS rebinding: a name that resolves to an allowed address for the check and to
    another one afterwards is still fetched from the checked address, looked up once."""
    import socket

    real = socket.getaddrinfo
    lookups: list[str] = []

    def rebinding(host, *args, **kwargs):
        if host == "rebind.test":
            lookups.append(host)
            if len(lookups) > 1:  # a second lookup would land on the metadata address
                return real("169.254.169.254", *args, **kwargs)
            return real("127.0.0.1", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    server.route("/", body=b"from the checked address")

    result = fetch(f"http://rebind.test:{server.port}/", allowlist=[f"127.0.0.1:{server.port}"])

    assert result.text() == "from the checked address"
    assert result.headers["x-seen-host"] == f"rebind.test:{server.port}"
    assert lookups == ["rebind.test"]
