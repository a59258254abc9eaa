"""schemathesis' coverage phase against the real server: every boundary and every
schema-breaking value the document defines for each parameter and body field (a string one
past its maxLength, a missing required field, a wrong type, each enum's neighbours, methods
the path does not declare), each answered as the document says.

Over v1 alone: a v2 operation is served by the same view and validators as its v1 twin and
differs only in its envelope (problem+json errors), which test_schemathesis.py checks on every
v2 operation with positive and negative data. The phase has no example budget (it generates
every case the schema defines), so running it on both versions doubled the suite's longest
test for no operation it would not already reach."""

from __future__ import annotations

import pytest

from tests.contract.support import schemathesis_run

pytestmark = pytest.mark.django_db(transaction=True)


def test_every_boundary_of_the_schema_is_answered_as_documented(
    chatter_server, make_user, tmp_path
):
    schemathesis_run(
        chatter_server,
        make_user("coverage"),
        tmp_path,
        phases="coverage",
        options=["--include-path-regex", r"^/api/v1/"],
    )
