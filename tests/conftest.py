from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from accounts.services import api_key_create
from core.embedded_db import embedded_database_ensure

# Web and job workers load the embedding model as they start (knowledge.embeddings_warm);
# the suite's servers and workers (which inherit this) start cold unless a test asks.
os.environ["CHATTER_EMBEDDINGS_WARM"] = "0"


def pytest_sessionstart(session: pytest.Session) -> None:
    # The suite's database server (unless DATABASE_URL names one); the servers and workers
    # the tests start attach to it, or find it running.
    embedded_database_ensure()


# The files that take minutes (they walk the whole schema), first: `make test`'s two workers
# take a file at a time in this order (--no-loadscope-reorder), so these start at once, side by
# side, and the other files fill in around them instead of leaving them for last.
LONGEST_FIRST = (
    "tests/contract/test_schemathesis_coverage.py",
    "tests/contract/test_schemathesis.py",
    "tests/security/test_fuzz.py",
    "tests/console/test_browser.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::")[0]
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the rest keep their order


@pytest.fixture
def make_user(db: None) -> Callable[..., User]:
    def make(username: str, *, staff: bool = False, password: str | None = None) -> User:
        user = User.objects.create_user(
            username=username, password=password, is_staff=staff, is_superuser=staff
        )
        return user

    return make


@pytest.fixture
def user(make_user: Callable[..., User]) -> User:
    return make_user("alice")


@pytest.fixture
def other_user(make_user: Callable[..., User]) -> User:
    return make_user("bob")


@pytest.fixture
def staff_user(make_user: Callable[..., User]) -> User:
    return make_user("operator", staff=True)


def _client_for(user: User, **key_options: object) -> APIClient:
    _, raw = api_key_create(user=user, name="test", **key_options)  # type: ignore[arg-type]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    client.raw_key = raw  # type: ignore[attr-defined]
    return client


@pytest.fixture
def client_for() -> Callable[..., APIClient]:
    return _client_for


@pytest.fixture
def api_client(user: User) -> APIClient:
    return _client_for(user)


@pytest.fixture
def other_client(other_user: User) -> APIClient:
    return _client_for(other_user)


@pytest.fixture
def staff_client(staff_user: User) -> APIClient:
    return _client_for(staff_user)


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient()


@pytest.fixture(scope="session", autouse=True)
def _close_pools_before_test_database_teardown(django_db_setup, django_db_blocker):
    """Pooled connections (from threads, the checkpointer, ...) stay open in the pool, and
    PostgreSQL refuses to drop a database with open sessions."""
    yield
    from django.db import connections

    with django_db_blocker.unblock():
        for connection in connections.all():
            connection.close()
            if hasattr(connection, "close_pool"):
                connection.close_pool()
        # A connection still checked out by some executor thread would make DROP DATABASE
        # fail; it belongs to a finished test, so end it.
        with connections["default"].cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        connections["default"].close()
