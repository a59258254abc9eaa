from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import pytest
from django.conf import settings
from pythonjsonlogger.json import JsonFormatter

from core.logs import RequestIdFilter

pytestmark = pytest.mark.django_db


@pytest.fixture
def json_log() -> io.StringIO:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter("%(levelname)s %(name)s %(request_id)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_every_line_of_a_request_carries_its_request_id(anon_client, json_log):
    response = anon_client.get("/api/v1/api-keys/")  # 401: django.request logs a warning

    request_id = response["X-Request-ID"]
    records = lines(json_log)
    assert records, "the request logged nothing"
    assert {record["request_id"] for record in records} == {request_id}
    assert any(record["name"] == "django.request" for record in records)


def test_a_sane_client_request_id_is_kept_and_an_unsafe_one_replaced(anon_client):
    kept = anon_client.get("/api/v1/health/", HTTP_X_REQUEST_ID="trace-42")
    replaced = anon_client.get("/api/v1/health/", HTTP_X_REQUEST_ID="bad id\nwith newline")

    assert kept["X-Request-ID"] == "trace-42"
    assert replaced["X-Request-ID"] != "bad id\nwith newline"
    assert len(replaced["X-Request-ID"]) == 32


def test_log_format_json_makes_every_line_json():
    script = (
        "import django, logging; django.setup(); "
        "logging.getLogger('chatter.test').warning('hello %s', 'there')"
    )
    env = {**os.environ, "LOG_FORMAT": "json", "DJANGO_SETTINGS_MODULE": "chatter_project.settings"}

    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=settings.BASE_DIR,
    )

    record = json.loads(result.stderr.strip().splitlines()[-1])
    assert record["message"] == "hello there"
    assert record["level"] == "WARNING" and record["logger"] == "chatter.test"
    assert record["request_id"] == "-"  # outside a request
