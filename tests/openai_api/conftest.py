"""A live Chatter (uvicorn, one process, on the test database) whose agents answer through a
loopback OpenAI-compatible upstream that answers with tool_calls when told to, and the
official clients (the `openai` SDK, langchain-openai's ChatOpenAI) pointed at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from accounts.models import User
from accounts.services import api_key_create
from agents.models import Agent
from agents.services import agent_create
from tests.conversations.conftest import FakeOpenAI
from tests.servers import uvicorn_server


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    yield fake
    fake.close()


@pytest.fixture(scope="session")
def chatter(
    django_db_setup: None, django_db_blocker: Any, upstream: FakeOpenAI, tmp_path_factory: Any
) -> Iterator[str]:
    """The base URL of a uvicorn server of Chatter on the test database (it sees what the
    tests commit: they run with transaction=True)."""
    from django.db import connection

    with django_db_blocker.unblock():
        database = connection.settings_dict["NAME"]
    log_path = Path(tmp_path_factory.mktemp("chatter")) / "server.log"
    env = {
        "CHATTER_PROVIDER_MODULES": "bench.providers",
        "OPENAI_BASE_URL": upstream.url,
        "OPENAI_API_KEY": "sk-upstream",
        "CHATTER_LLM_MAX_RETRIES": "0",
        "CHATTER_LLM_TIMEOUT": "10",
        # Limits are tested with a key's own limit (test_errors); these let the rest run.
        "CHATTER_RATE_LIMIT": "100000/m",
        "CHATTER_RATE_LIMIT_EXPENSIVE": "100000/m",
        "LOG_LEVEL": "WARNING",
    }
    with uvicorn_server(database=database, log_path=log_path, env=env) as (base, _):
        yield base


@pytest.fixture
def fake(upstream: FakeOpenAI, settings: Any) -> Iterator[FakeOpenAI]:
    """The upstream, reset for this test; this process's settings name it too, so agents
    naming `openai:` models pass validation here as they do in the server."""
    upstream.requests.clear()
    upstream.script.clear()
    upstream.failing_models.clear()
    upstream.fail_with = None
    upstream.hang = False
    upstream.reply = "Hello from the fake OpenAI server."
    settings.OPENAI_BASE_URL = upstream.url
    settings.OPENAI_API_KEY = "sk-upstream"
    yield upstream


@pytest.fixture
def make_agent(fake: FakeOpenAI) -> Callable[..., Agent]:
    def make(owner: User, **fields: Any) -> Agent:
        defaults: dict[str, Any] = {
            "name": "Maths",
            "slug": "maths",
            "system_prompt": "You are the maths agent.",
            "model": "openai:primary",
            "temperature": 0.2,
            "max_tokens": 300,
            "tools": ["calculator"],
        }
        return agent_create(actor=owner, **{**defaults, **fields})

    return make


@pytest.fixture
def key_for() -> Callable[..., str]:
    def make(user: User, **options: Any) -> str:
        _, raw = api_key_create(user=user, name="openai-sdk", **options)
        return raw

    return make


@pytest.fixture
def key(user: User, key_for: Callable[..., str]) -> str:
    return key_for(user)


@pytest.fixture
def base_url(chatter: str) -> str:
    return f"{chatter}/api/openai/v1"


@pytest.fixture
def sdk(base_url: str, key: str) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=30)
    yield client
    client.close()
