"""What plugins cost a request: the per-request state check, and enabled request hooks.

    .venv/bin/python bench/bench_plugins.py [REQUESTS]        (REQUESTS defaults to 400)

On its own database (chatter_bench_plugins, dropped afterwards), through Django's test
client in this process, GET /api/v1/whoami/ with an API key:

1. baseline: the plugins middleware removed from MIDDLEWARE;
2. the middleware, no plugin enabled: one read of the state generation per request;
3. the test plugin `sink` enabled (its before and after hooks run on the plugin thread
   pool for each request);

rounds interleaved (baseline, 2, 3, baseline, ...) so load drift hits all alike; prints
the median per request and each ratio against the baseline, and what the state check
alone (``plugins_sync`` when nothing changed) takes.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatter_project.settings")
os.environ["CHATTER_DB_NAME"] = DB_NAME = "chatter_bench_plugins"
os.environ["CHATTER_RATE_LIMITS_ENABLED"] = "0"

import django  # noqa: E402

django.setup()

from core.embedded_db import embedded_database_ensure  # noqa: E402

embedded_database_ensure()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client, override_settings  # noqa: E402

ROUNDS = 5


def recreate_database() -> None:
    with connection._nodb_cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{DB_NAME}"')
    call_command("migrate", verbosity=0)


def drop_database() -> None:
    connection.close()
    if hasattr(connection, "close_pool"):
        connection.close_pool()
    with connection._nodb_cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')


def per_request(client: Client, key: str, n: int, middleware: list[str]) -> float:
    with override_settings(MIDDLEWARE=middleware):
        client.get("/api/v1/whoami/", HTTP_AUTHORIZATION=f"Bearer {key}")  # warm
        started = time.perf_counter()
        for _ in range(n):
            response = client.get("/api/v1/whoami/", HTTP_AUTHORIZATION=f"Bearer {key}")
            assert response.status_code == 200, response.content
        return (time.perf_counter() - started) / n


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    recreate_database()
    try:
        import hashlib
        import tempfile

        from accounts.services import api_key_create, user_ensure
        from plugins.models import Plugin
        from plugins.services import plugin_disable, plugin_enable, plugin_install
        from plugins.wheels import wheel_build

        settings.CHATTER_PLUGIN_DIR = Path(tempfile.mkdtemp(prefix="bench-plugins-"))
        staff, _ = user_ensure(username="bench-operator", staff=True)
        _, key = api_key_create(user=staff, name="bench")
        filename, data = wheel_build(ROOT / "tests/plugins/sample_plugins/sink")
        plugin, _ = plugin_install(
            actor=staff, filename=filename, data=data, sha256=hashlib.sha256(data).hexdigest()
        )
        full = list(settings.MIDDLEWARE)
        bare = [m for m in full if m != "plugins.middleware.PluginMiddleware"]
        client = Client()
        results: dict[str, list[float]] = {"baseline": [], "check only": [], "hooks": []}
        for _ in range(ROUNDS):
            results["baseline"].append(per_request(client, key, n, bare))
            plugin_disable(plugin=Plugin.objects.get(pk=plugin.pk), actor=staff)
            results["check only"].append(per_request(client, key, n, full))
            plugin_enable(plugin=Plugin.objects.get(pk=plugin.pk), actor=staff)
            results["hooks"].append(per_request(client, key, n, full))
        from plugins.runtime import plugins_sync

        plugins_sync()
        started = time.perf_counter()
        for _ in range(2000):
            plugins_sync()  # up to date: the generation read alone
        check = (time.perf_counter() - started) / 2000
        from accounts.models import User

        started = time.perf_counter()
        for _ in range(2000):
            User.objects.filter(pk=staff.pk).values_list("pk", flat=True).first()
        read = (time.perf_counter() - started) / 2000
        base = statistics.median(results["baseline"])
        print(f"GET /api/v1/whoami/, {n} requests x {ROUNDS} rounds, median per request:")
        for name, values in results.items():
            value = statistics.median(values)
            print(f"  {name:11} {value * 1000:7.3f} ms   x{value / base:.3f}")
        print(
            f"  plugins_sync() when up to date: {check * 1e6:.0f} us, a primary-key read of "
            f"a user {read * 1e6:.0f} us: x{check / read:.2f}"
        )
    finally:
        drop_database()


if __name__ == "__main__":
    main()
