"""Loading the settings starts nothing; the processes that use the database start it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from django.conf import settings

IMPORT_ONLY = """
import json, django
django.setup()
from django.conf import settings
print(json.dumps({"host": settings.DATABASES["default"]["HOST"]}))
"""

IMPORT_THEN_ENSURE = """
import json, os, django
django.setup()
from django.conf import settings
from django.db import connection
from core.embedded_db import embedded_database_ensure
expected = settings.DATABASES["default"]["HOST"]
embedded_database_ensure()
with connection.cursor() as cursor:
    cursor.execute("SELECT current_database()")
    name = cursor.fetchone()[0]
print(json.dumps({
    "expected": expected,
    "host": settings.DATABASES["default"]["HOST"],
    "socket": os.path.exists(os.path.join(expected, ".s.PGSQL.5432")),
    "database": name,
}))
"""


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="chs") as path:
        yield Path(path)


def run(script: str, data_dir: Path) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CHATTER_DB_NAME"}}
    env.update(CHATTER_DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="chatter_project.settings")
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def postgres_serving(pgdata: Path) -> list[int]:
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] == "postgres" and str(pgdata) in (process.info["cmdline"] or []):
            found.append(process.pid)
    return found


def test_loading_the_settings_starts_no_database(data_dir):
    loaded = run(IMPORT_ONLY, data_dir)

    pgdata = data_dir.resolve() / "pgdata"
    assert loaded == {"host": str(pgdata)}  # a short path: the socket will live there
    assert not pgdata.exists(), "nothing was initialised, locked or started"
    assert postgres_serving(pgdata) == []


def test_a_process_that_uses_it_starts_it_where_the_settings_said(data_dir):
    loaded = run(IMPORT_THEN_ENSURE, data_dir)

    assert loaded["host"] == loaded["expected"]
    assert loaded["socket"] is True and loaded["database"] == "chatter"
    # The last (only) holder left: the server stopped with it.
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()
    assert postgres_serving(data_dir.resolve() / "pgdata") == []
