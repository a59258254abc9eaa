"""schemathesis over every operation of /api/schema/ (both versions) whose path names an
object, in process through the ASGI app, with a real API key and path parameters naming the
fuzzer's own objects, so generated bodies reach real rows (an update, an action, a nested
list): no 5xx, no response that contradicts the document.

Operations with made-up ids, and positive and negative data for every operation, are the
contract test's (tests/contract/test_schemathesis.py: examples, coverage, fuzzing and stateful
phases, both generation modes, every check); this test adds what it cannot do: reach the
fuzzer's own rows behind each id."""

from __future__ import annotations

import contextlib

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from accounts.services import api_key_create

MAX_EXAMPLES = 6

# The ASGI app runs views in its own threads: they need committed rows.
pytestmark = pytest.mark.django_db(transaction=True)


def _own_ids(path: str, user, factories) -> dict[str, str] | None:
    """Path parameters naming the fuzzer's own objects, so bodies reach real rows too."""
    segments = path.split("/")
    ids: dict[str, str] = {}
    parent = None
    for index, segment in enumerate(segments):
        if segment.startswith("{"):
            factory = factories.get(segments[index - 1])
            if factory is None:
                return None
            parent = factory(user) if parent is None else factory(user, parent)
            ids[segment.strip("{}")] = parent
    return ids or None


def test_every_operation_survives_fuzzing(settings, make_user, object_factories):
    from chatter_project.asgi import application

    # The fuzzer sends hundreds of requests from one key: limits are tested elsewhere.
    settings.CHATTER_RATE_LIMITS = {"default": "100000/h", "expensive": "100000/h"}
    fuzzer = make_user("fuzzer")
    _, raw = api_key_create(user=fuzzer, name="fuzz")
    headers = {"Authorization": f"Bearer {raw}"}
    schema = schemathesis.openapi.from_asgi("/api/schema/", application)
    operations = [result.ok() for result in schema.get_all_operations()]
    failures: list[str] = []
    calls = 0

    strategies = []
    unreachable = []
    for operation in operations:
        if "{" not in operation.path:
            continue
        own = _own_ids(operation.path, fuzzer, object_factories)
        if own is None:
            unreachable.append(operation.verbose_name)
            continue
        strategies.append(operation.as_strategy(path_parameters=own))
        strategies.append(operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=own))

    for strategy in strategies:

        @given(case=strategy)
        @hypothesis_settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            nonlocal calls
            calls += 1
            try:
                case.call_and_validate(
                    headers=headers, checks=[not_a_server_error, response_schema_conformance]
                )
            except Exception as exc:  # schemathesis' failure groups
                failures.append(f"{case.operation.verbose_name}: {str(exc)[:800]}")
                raise

        # Recorded above; go on to the next operation either way.
        with contextlib.suppress(Exception):
            run()

    print(f"\nfuzzed {len(strategies) // 2} operations on own objects, {calls} requests")
    # Every operation on an object reaches one of the fuzzer's own (a new resource needs its
    # factory in tests/security/conftest.py).
    assert not unreachable, unreachable
    assert len(strategies) >= 60
    assert not failures, "\n\n".join(failures)
