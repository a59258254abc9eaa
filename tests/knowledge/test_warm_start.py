"""Web and job workers load the embedding model as they start, in the background: ready/
answers meanwhile and says whether it is loaded; the first search does not pay for it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import httpx
import pytest
from django.db import connection

from knowledge.embeddings import embedding_status
from tests.jobs.support import Cluster, wait_for
from tests.servers import uvicorn_server

pytestmark = pytest.mark.django_db(transaction=True)


def test_ready_reports_the_active_space_and_whether_its_model_is_loaded(client):
    # The knowledge suite loads the bundled model once per session (conftest).
    body = client.get("/api/v1/ready/").json()

    assert body["status"] == "ok"
    assert body["embeddings"] == embedding_status()
    assert body["embeddings"]["space"] == "local:all-MiniLM-L6-v2"
    assert body["embeddings"]["loaded"] is True and body["embeddings"]["state"] == "loaded"


@pytest.fixture
def web_server() -> Iterator[tuple[str, subprocess.Popen]]:
    # Not waited for: the test watches readiness from the first answer on.
    with uvicorn_server(
        database=connection.settings_dict["NAME"],
        env={"CHATTER_EMBEDDINGS_WARM": "1"},  # this test asks for the warm start
        wait=False,
    ) as server:
        yield server


def test_a_web_worker_loads_the_model_in_the_background_as_it_starts(web_server):
    base, _ = web_server
    states = []

    def loaded() -> bool:
        try:
            response = httpx.get(f"{base}/api/v1/ready/", timeout=10)
        except httpx.HTTPError:
            return False  # not listening yet
        assert response.status_code == 200, response.text  # readiness never waits for it
        states.append(response.json()["embeddings"]["state"])
        return response.json()["embeddings"]["loaded"]

    # No search is ever sent: only the start-up can have loaded it.
    wait_for(loaded, timeout=180, what="the web worker to load the embedding model")
    assert set(states) <= {"loading", "loaded"}, states


def test_a_job_worker_loads_the_model_as_it_spawns():
    cluster = Cluster(workers=1, env={"CHATTER_EMBEDDINGS_WARM": "1"})
    try:
        wait_for(
            lambda: "embedding model local:all-MiniLM-L6-v2 loaded in" in cluster.output(),
            timeout=180,
            what="the job worker to load the embedding model",
        )
    finally:
        cluster.stop()


def test_nothing_is_warmed_where_it_is_turned_off():
    from knowledge.embeddings import embeddings_warm

    assert os.environ["CHATTER_EMBEDDINGS_WARM"] == "0"
    assert embeddings_warm() is None
