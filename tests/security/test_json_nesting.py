"""A JSON body nested 10,000 deep is refused cheaply (400) before anything parses or walks
it: DRF, Ninja and the unauthenticated probes alike, with no 500 and no traceback."""

from __future__ import annotations

import logging

import pytest
from django.test import Client

from web.http_policy import json_nesting_exceeds

pytestmark = pytest.mark.django_db

DEEP = 10_000
BODIES = {
    "array": "[" * DEEP + "]" * DEEP,
    "object": '{"a":' * DEEP + "1" + "}" * DEEP,
    "mixed": '{"content":' + '[{"x":' * (DEEP // 2) + "0" + "}]" * (DEEP // 2) + "}",
}
ROUTES = [
    ("post", "/api/v1/health/", False),  # unauthenticated; GET-only, still must not 500
    ("post", "/api/v1/api-keys/", True),  # DRF
    ("post", "/api/v1/conversations/", True),  # DRF
    ("post", "/api/v2/knowledge/search/", True),  # DRF, v2 (problem+json)
    ("post", "/api/v1/conversations/00000000-0000-0000-0000-000000000000/messages/stream/", True),
]


@pytest.mark.parametrize("shape", sorted(BODIES))
@pytest.mark.parametrize(("method", "path", "authenticated"), ROUTES)
def test_a_deeply_nested_body_is_a_400_not_a_500(
    shape, method, path, authenticated, api_client, caplog
):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {api_client.raw_key}"} if authenticated else {}
    with caplog.at_level(logging.ERROR):
        response = getattr(Client(), method)(
            path, data=BODIES[shape], content_type="application/json", **headers
        )

    assert response.status_code == 400, response.content[:300]
    body = response.json()
    code = body["code"] if path.startswith("/api/v2/") else body["error"]["code"]
    assert code == "nested_too_deep"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_the_content_type_does_not_matter(api_client):
    # Ninja parses a body as JSON whatever it is labelled.
    response = Client().post(
        "/api/v1/conversations/00000000-0000-0000-0000-000000000000/messages/stream/",
        data=BODIES["array"],
        content_type="text/plain",
        HTTP_AUTHORIZATION=f"Bearer {api_client.raw_key}",
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "nested_too_deep"


def test_ordinary_nesting_and_brackets_inside_strings_pass(api_client):
    brackets = "[[[{{{" * 50  # text, not structure
    response = api_client.post(
        "/api/v1/conversations/",
        {"title": "t", "metadata": {"a": {"b": [1, 2]}}, "system_prompt": brackets},
        format="json",
    )

    assert response.status_code == 201, response.content


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        (b"[]", 1, False),
        (b"[[]]", 1, True),
        (b'{"a": [1, {"b": 2}]}', 3, False),
        (b'{"a": [1, {"b": 2}]}', 2, True),
        (b'["[[[[[[", "\\"[[[[["]', 1, False),  # brackets and escaped quotes inside strings
        (b"[" * 100 + b"]" * 100, 64, True),
        (b"[" * 64 + b"]" * 64, 64, False),
        (b"[1]," * 1000, 1, False),  # many openings, shallow
    ],
)
def test_nesting_is_measured_without_parsing(text, limit, expected):
    assert json_nesting_exceeds(text, limit) is expected
