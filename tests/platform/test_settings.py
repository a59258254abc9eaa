"""Environment-driven settings, checked in fresh interpreters as a deployment would load them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.db import connection

SCRIPT = """
import json, django
django.setup()
from django.conf import settings
db = settings.DATABASES["default"]
print(json.dumps({
    "db": {k: db[k] for k in ("NAME", "USER", "HOST", "PORT")},
    "pool": "pool" in db["OPTIONS"],
    "embedded": settings.EMBEDDED_DATABASE,
    "cache": settings.CACHES["default"]["BACKEND"],
    "q": {k: v for k, v in settings.Q_CLUSTER.items() if k in ("orm", "redis")},
}))
"""


def load(**env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    environ.update(env, DJANGO_SETTINGS_MODULE="chatter_project.settings")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=environ,
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_database_url_selects_that_server_and_skips_the_embedded_one():
    loaded = load(DATABASE_URL="postgres://chat:pw@db.internal:6543/prod")

    assert loaded["db"] == {"NAME": "prod", "USER": "chat", "HOST": "db.internal", "PORT": 6543}
    assert loaded["embedded"] is False and loaded["pool"] is True


def test_redis_url_moves_the_cache_and_the_queue_broker_to_redis():
    loaded = load(REDIS_URL="redis://127.0.0.1:6390/0")

    assert loaded["cache"] == "django.core.cache.backends.redis.RedisCache"
    assert loaded["q"] == {"redis": "redis://127.0.0.1:6390/0"}


def test_without_either_everything_lives_in_the_embedded_postgres():
    loaded = load()

    assert loaded["embedded"] is True
    assert loaded["cache"] == "core.cache.PostgresCache"
    assert loaded["q"] == {"orm": "default"}


@pytest.mark.django_db
def test_the_vector_extension_is_installed_by_a_migration():
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        (version,) = cursor.fetchone()

    assert tuple(int(part) for part in version.split(".")[:2]) >= (0, 8)
