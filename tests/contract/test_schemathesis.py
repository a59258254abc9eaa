"""`schemathesis run --checks all` against the real server: the OpenAPI document at
/api/schema/ (both versions, DRF and Ninja merged) must describe what the API really accepts
and answers (no 500s, declared status codes, bodies, content types and headers; auth and
use-after-free; a request the schema allows is accepted and one it forbids refused).
uvicorn serves the test database (tests/contract/conftest.py).

This file runs the examples, fuzzing (positive and negative data) and stateful phases over
every operation of both versions; test_schemathesis_coverage.py runs the coverage phase.
They are two files so that two test workers run them side by side."""

from __future__ import annotations

import pytest

from tests.contract.support import schemathesis_run

# The server is another process: it must see committed rows (the user and its key).
pytestmark = pytest.mark.django_db(transaction=True)


def test_the_api_keeps_every_promise_of_its_schema(chatter_server, make_user, tmp_path):
    schemathesis_run(
        chatter_server,
        make_user("contract"),
        tmp_path,
        phases="examples,fuzzing,stateful",
        options=[],
    )
