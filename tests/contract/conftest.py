"""The contract tests' server: uvicorn on the test database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import uvicorn_server


@pytest.fixture
def chatter_server(tmp_path: Path) -> Iterator[str]:
    from django.db import connection

    env = {
        # Hundreds of requests from one key: limits are tested in tests/security.
        "CHATTER_RATE_LIMIT": "1000000/h",
        "CHATTER_RATE_LIMIT_EXPENSIVE": "1000000/h",
        "CHATTER_DEFAULT_MODEL": "local",
        "LOG_LEVEL": "WARNING",
    }
    database = connection.settings_dict["NAME"]
    with uvicorn_server(database=database, log_path=tmp_path / "server.log", env=env) as (url, _):
        yield url
