"""The SSRF guard on webhooks: every inside address class refused at registration and at send
time, the allowlist, and a DNS answer that changes between the check and the connection."""

from __future__ import annotations

import socket

import pytest

from core.errors import ApplicationError
from core.events import alert_raise
from tests.webhooks.conftest import Reply, deliver_once
from webhooks.models import Delivery, DeliveryStatus, Endpoint
from webhooks.services import endpoint_create

pytestmark = pytest.mark.django_db

INSIDE = [
    "http://127.0.0.1/hook",
    "http://127.9.9.9:8080/hook",
    "http://localhost/hook",
    "http://[::1]/hook",
    "http://10.1.2.3/hook",
    "http://172.16.0.1/hook",
    "http://192.168.1.1/hook",
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
    "http://[fe80::1]/hook",  # IPv6 link-local
    "http://100.64.0.1/hook",  # CGNAT (shared address space)
    "http://224.0.0.1/hook",  # multicast
    "http://[ff02::1]/hook",  # IPv6 multicast
    "http://240.0.0.1/hook",  # reserved
    "http://0.0.0.0/hook",  # unspecified
    "http://[::]/hook",
    "http://198.18.0.1/hook",  # benchmarking
    "http://192.0.2.1/hook",  # documentation
    "http://[fc00::1]/hook",  # IPv6 unique local
    "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped IPv6
    "http://[::ffff:169.254.169.254]/hook",
    "http://[64:ff9b::a9fe:a9fe]/hook",  # NAT64 of 169.254.169.254
    "http://[64:ff9b::7f00:1]/hook",  # NAT64 of 127.0.0.1
    "http://[2002:7f00:1::]/hook",  # 6to4 of 127.0.0.1
    "http://2130706433/hook",  # 127.0.0.1 as a decimal number
    "http://0177.0.0.1/hook",  # 127.0.0.1 in octal
    "http://0x7f.1/hook",
]


@pytest.mark.parametrize("url", INSIDE)
def test_every_inside_address_class_is_refused_at_registration(user, url, settings):
    settings.CHATTER_WEBHOOK_ALLOWED_HOSTS = []
    with pytest.raises(ApplicationError) as refused:
        endpoint_create(owner=user, name="inside", url=url)
    assert refused.value.code in ("url_not_allowed", "url_unresolvable")
    assert refused.value.status == 400
    assert "url" in refused.value.details
    assert not Endpoint.objects.exists()


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "gopher://example.com/",
        "http://u:p@example.com/",
    ],
)
def test_other_schemes_and_credentials_are_refused(user, url):
    with pytest.raises(ApplicationError) as refused:
        endpoint_create(owner=user, name="odd", url=url)
    assert refused.value.code == "url_not_allowed"


class FakeDNS:
    """Answers for chosen names (a list per call: the answers change as the test says);
    everything else, IP literals included, goes to the real resolver."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real = socket.getaddrinfo
        self.answers: dict[str, list[list[str]]] = {}
        self.calls: dict[str, int] = {}
        monkeypatch.setattr(socket, "getaddrinfo", self.getaddrinfo)

    def set(self, name: str, *answers: list[str]) -> None:
        """Each call for ``name`` gets the next answer; the last one repeats."""
        self.answers[name] = list(answers)

    def getaddrinfo(self, host, port, *args, **kwargs):
        if host not in self.answers:
            return self.real(host, port, *args, **kwargs)
        self.calls[host] = self.calls.get(host, 0) + 1
        queue = self.answers[host]
        addresses = queue.pop(0) if len(queue) > 1 else queue[0]
        results = []
        for address in addresses:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (
                (address, port or 0, 0, 0) if family == socket.AF_INET6 else (address, port or 0)
            )
            results.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
        return results


@pytest.fixture
def dns(monkeypatch) -> FakeDNS:
    return FakeDNS(monkeypatch)


@pytest.mark.parametrize(
    "answer",
    [["10.0.0.5"], ["169.254.169.254"], ["::1"], ["93.184.216.34", "10.0.0.5"], ["fd00::5"]],
)
def test_a_name_resolving_to_an_inside_address_is_refused(user, dns, answer, settings):
    settings.CHATTER_WEBHOOK_ALLOWED_HOSTS = []
    dns.set("hooks.example", answer)
    with pytest.raises(ApplicationError) as refused:
        endpoint_create(owner=user, name="sneaky", url="https://hooks.example/in")
    assert refused.value.code == "url_not_allowed"


def test_a_name_that_does_not_resolve_is_a_400(user):
    with pytest.raises(ApplicationError) as refused:
        endpoint_create(owner=user, name="nowhere", url="https://no-such-host.invalid/hook")
    assert (refused.value.status, refused.value.code) == (400, "url_unresolvable")


def test_the_agents_allowlist_does_not_open_private_targets_to_webhooks(user, settings):
    settings.CHATTER_OUTBOUND_ALLOWLIST = ["127.0.0.1", "10.0.0.0/8"]
    settings.CHATTER_WEBHOOK_ALLOWED_HOSTS = []
    with pytest.raises(ApplicationError):
        endpoint_create(owner=user, name="x", url="http://127.0.0.1:9/hook")


def test_the_webhook_allowlist_takes_hosts_cidrs_and_ports(user, settings):
    settings.CHATTER_WEBHOOK_ALLOWED_HOSTS = ["10.0.0.0/8", "127.0.0.1:8080"]
    assert endpoint_create(owner=user, name="a", url="http://10.9.8.7/hook").pk
    assert endpoint_create(owner=user, name="b", url="http://127.0.0.1:8080/hook").pk
    with pytest.raises(ApplicationError):
        endpoint_create(owner=user, name="c", url="http://127.0.0.1:8081/hook")
    with pytest.raises(ApplicationError):
        endpoint_create(owner=user, name="d", url="http://192.168.0.1/hook")


def test_a_name_that_turns_private_after_registration_is_refused_at_send_time(user, dns, receiver):
    port = receiver.port
    dns.set("hooks.example", ["93.184.216.34"], ["10.0.0.5"])
    endpoint = endpoint_create(owner=user, name="turns", url=f"http://hooks.example:{port}/hook")
    alert_raise(code="x", message="y", owner_id=user.pk)

    deliver_once()

    delivery = Delivery.objects.get(endpoint=endpoint)
    assert delivery.status == DeliveryStatus.PENDING and delivery.retry_step == 1
    [attempt] = delivery.attempts.all()
    assert attempt.status_code is None and attempt.address == ""
    assert "Refused by the SSRF guard" in attempt.error and "10.0.0.5" in attempt.error
    assert receiver.received == []


def test_the_connection_goes_to_the_checked_address_when_dns_changes_after_the_check(
    user, dns, receiver
):
    """A rebinding name: the check at send time sees the (allowlisted) loopback receiver,
    every later lookup would say 10.0.0.5. The send never looks again: one lookup per
    attempt, the request reaches the checked address, with the name as its Host."""
    port = receiver.port
    dns.set("rebind.example", ["127.0.0.1"])
    endpoint = endpoint_create(owner=user, name="rebind", url=f"http://rebind.example:{port}/hook")
    dns.set("rebind.example", ["127.0.0.1"], ["10.0.0.5"])
    dns.calls.clear()
    alert_raise(code="x", message="y", owner_id=user.pk)

    deliver_once()

    assert dns.calls == {"rebind.example": 1}
    [received] = receiver.at("/hook")
    assert received.headers["host"] == f"rebind.example:{port}"
    delivery = Delivery.objects.get(endpoint=endpoint)
    assert delivery.status == DeliveryStatus.SUCCEEDED
    assert delivery.attempts.get().address == "127.0.0.1"


def test_a_huge_response_is_read_only_up_to_the_cap(user, receiver, make_endpoint, settings):
    settings.CHATTER_WEBHOOK_RESPONSE_MAX_BYTES = 4096
    make_endpoint(user)
    receiver.default = Reply(200, body=b"x" * (1024 * 1024))
    alert_raise(code="x", message="y", owner_id=user.pk)

    deliver_once()

    attempt = Delivery.objects.get().attempts.get()
    assert attempt.succeeded
    assert len(attempt.response_excerpt) == settings.CHATTER_WEBHOOK_RESPONSE_EXCERPT_CHARS
