from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid

import pytest
from django.db import connections
from rest_framework.test import APIClient

from accounts.models import SecurityCounter
from web.ratelimits import route_class

pytestmark = pytest.mark.django_db


@pytest.fixture
def tight_limits(settings):
    settings.CHATTER_RATE_LIMITS = {"default": "3/h", "expensive": "2/h"}
    return settings


def test_it_answers_429_with_retry_after_and_ratelimit_headers(tight_limits, api_client):
    remaining = []
    for _ in range(3):
        response = api_client.get("/api/v1/conversations/")
        assert response.status_code == 200
        assert response["RateLimit-Limit"] == "3"
        remaining.append(response["RateLimit-Remaining"])

    response = api_client.get("/api/v1/conversations/")

    assert remaining == ["2", "1", "0"]
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(response["Retry-After"]) <= 3600
    assert response["RateLimit-Remaining"] == "0"
    assert response["RateLimit-Reset"] == response["Retry-After"]
    assert SecurityCounter.objects.get(event="security.rate_limited").count == 1


def test_each_api_key_has_its_own_budget(tight_limits, user, client_for):
    first, second = client_for(user), client_for(user)
    for _ in range(3):
        assert first.get("/api/v1/conversations/").status_code == 200
    assert first.get("/api/v1/conversations/").status_code == 429
    assert second.get("/api/v1/conversations/").status_code == 200


def test_a_key_may_carry_its_own_limit(tight_limits, user, client_for):
    client = client_for(user, rate_limit="5/h")
    statuses = [client.get("/api/v1/conversations/").status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]


def test_message_send_is_an_expensive_route(tight_limits, api_client):
    conversation = api_client.post("/api/v1/conversations/", {}, format="json").json()
    url = f"/api/v1/conversations/{conversation['id']}/messages/"
    statuses = [
        api_client.post(url, {"content": "hi"}, format="json").status_code for _ in range(3)
    ]
    stream = api_client.post(f"{url}stream/", {"content": "hi"}, format="json")

    assert statuses == [201, 201, 429]
    assert stream.status_code == 429  # the stream shares the expensive budget
    assert api_client.get(url).status_code == 200  # reading is not expensive


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/api/v1/conversations/abc/messages/stream/", "expensive"),
        ("POST", "/api/v1/documents/", "expensive"),  # routes other apps add later
        ("GET", "/api/v1/documents/", "default"),
        ("POST", "/api/v1/knowledge/search/", "expensive"),
        ("GET", "/api/v1/conversations/", "default"),
        ("GET", "/api/v1/health/", None),
    ],
)
def test_route_classes_come_from_url_patterns(method, path, expected):
    assert route_class(method, path) == expected


def test_anonymous_clients_are_counted_per_ip(tight_limits):
    one, two = APIClient(REMOTE_ADDR="203.0.113.1"), APIClient(REMOTE_ADDR="203.0.113.2")
    for _ in range(3):
        assert one.get("/api/v1/conversations/").status_code == 401
    assert one.get("/api/v1/conversations/").status_code == 429
    assert two.get("/api/v1/conversations/").status_code == 401


def test_x_forwarded_for_counts_only_from_trusted_proxies(tight_limits):
    tight_limits.CHATTER_TRUSTED_PROXIES = ["10.0.0.0/8"]
    proxy = APIClient(REMOTE_ADDR="10.1.2.3")
    stranger = APIClient(REMOTE_ADDR="198.51.100.7")

    # Behind the proxy, each forwarded client has its own budget.
    for client_ip in ("192.0.2.1", "192.0.2.2"):
        for _ in range(3):
            response = proxy.get("/api/v1/conversations/", HTTP_X_FORWARDED_FOR=client_ip)
            assert response.status_code == 401
    # A direct client cannot escape its budget by inventing X-Forwarded-For.
    for index in range(3):
        forged = f"192.0.2.{100 + index}"
        assert (
            stranger.get("/api/v1/conversations/", HTTP_X_FORWARDED_FOR=forged).status_code == 401
        )
    assert stranger.get("/api/v1/conversations/", HTTP_X_FORWARDED_FOR="1.1.1.1").status_code == 429


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_admit_exactly_the_limit(settings, make_user, client_for):
    """Threads, each with its own database connection, race on the shared cache's counter.
    An hourly window: a window edge in the middle of the race is practically impossible."""
    settings.CHATTER_RATE_LIMITS = {"default": "7/h", "expensive": "7/h"}
    user = make_user(f"racer-{uuid.uuid4().hex[:8]}")
    raw = client_for(user).raw_key
    statuses: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(24)

    def hit() -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        try:
            start.wait()
            status = client.get("/api/v1/whoami/").status_code
            with lock:
                statuses.append(status)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=hit) for _ in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200] * 7 + [429] * 17


@pytest.mark.django_db(transaction=True)
def test_client_processes_racing_admit_exactly_the_limit(make_user, client_for, tmp_path):
    """Three processes of eight threads, each with its own connections, one key, limit 9."""
    from django.conf import settings as django_settings
    from django.db import connection

    raw = client_for(make_user("multi-racer")).raw_key
    go_file = tmp_path / "go"
    env = {
        **os.environ,
        "CHATTER_DATA_DIR": str(django_settings.DATA_DIR),
        "CHATTER_DB_NAME": connection.settings_dict["NAME"],
        "CHATTER_RATE_LIMIT": "9/h",
        "DB_POOL_MAX": "10",
    }
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.security.race_client", raw, "8", str(go_file)],
            cwd=django_settings.BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    statuses = []
    try:
        for process in processes:
            assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        go_file.touch()
        for process in processes:
            out, _ = process.communicate(timeout=120)
            assert process.returncode == 0
            statuses += [int(code) for code in out.split()]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.communicate()

    assert sorted(statuses) == [200] * 9 + [429] * 15


@pytest.fixture
def unreachable_counter_store(settings):
    """The rate limiter's cache pointed at a Redis port nobody listens on."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.CACHES = {
        **settings.CACHES,
        "ratelimit": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/0",
            "OPTIONS": {"socket_connect_timeout": 0.5},
        },
    }
    settings.RATELIMIT_USE_CACHE = "ratelimit"
    return settings


def test_an_unreachable_counter_store_refuses_with_503_not_500(
    unreachable_counter_store, api_client
):
    response = api_client.get("/api/v1/conversations/")

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "rate_limiter_unavailable"
    assert response["Retry-After"] == "5"


def test_fail_open_admits_requests_when_the_counter_store_is_unreachable(
    unreachable_counter_store, api_client
):
    unreachable_counter_store.CHATTER_RATE_LIMITS_FAIL_OPEN = True

    response = api_client.get("/api/v1/conversations/")

    assert response.status_code == 200
    assert "RateLimit-Limit" not in response
