from __future__ import annotations

import pytest


def test_health_needs_no_database_and_no_auth(client):
    response = client.get("/api/v1/health/")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_ready_reports_database_and_queue(client):
    response = client.get("/api/v1/ready/")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["queue"]["ok"] is True


@pytest.mark.django_db
def test_ready_is_503_when_the_queue_broker_is_unreachable(client, monkeypatch):
    class BrokenBroker:
        def queue_size(self):
            raise ConnectionError("broker down")

    monkeypatch.setattr("django_q.brokers.get_broker", lambda: BrokenBroker())

    response = client.get("/api/v1/ready/")

    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "not_ready"
    assert error["details"]["checks"]["queue"]["error"] == "ConnectionError: broker down"
    assert error["details"]["checks"]["database"]["ok"] is True
