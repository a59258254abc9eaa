"""The checkpointer's tables and pool: made at migrate time, and robust to PostgreSQL
ending its connections."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
from django.conf import settings
from django.db import connection

from conversations.checkpointer import APPLICATION_NAME, get_checkpointer, thread_config
from conversations.models import Conversation

pytestmark = pytest.mark.django_db(transaction=True)

MAINTENANCE = """
import json
from jobs import worker
from jobs.models import Job
from jobs.tasks import maintenance_enqueue
job_id = maintenance_enqueue()
status = worker.run_next_job()
job = Job.objects.get(pk=job_id)
print(json.dumps({"status": status, "failed": (job.result or {}).get("failed"),
                  "error": job.error}))
"""


def manage(database: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CHATTER_DATA_DIR": str(settings.DATA_DIR), "CHATTER_DB_NAME": database}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_maintenance_succeeds_on_a_fresh_install_before_any_chat_turn():
    database = f"chatter_fresh_{uuid.uuid4().hex[:8]}"
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{database}"')
    try:
        migrated = manage(database, "migrate", "--noinput")
        assert migrated.returncode == 0, migrated.stderr[-2000:]

        ran = manage(database, "shell", "-c", MAINTENANCE)

        assert ran.returncode == 0, ran.stderr[-2000:]
        outcome = json.loads(ran.stdout.strip().splitlines()[-1])
        assert outcome == {"status": "succeeded", "failed": [], "error": ""}, outcome
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def test_a_turn_after_postgresql_ended_the_pools_connections_succeeds(send, user):
    conversation = Conversation.objects.create(owner=user, model="instant:ok")
    assert send(conversation, "before").status_code == 201  # the pool has idle connections

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s",
            [APPLICATION_NAME],
        )
        assert cursor.fetchone()[0] >= 1

    for attempt in range(3):
        response = send(conversation, f"after {attempt}")
        assert response.status_code == 201, response.json()
    state = get_checkpointer().get_tuple(thread_config(str(conversation.pk)))
    assert state is not None
