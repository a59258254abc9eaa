"""Each extension point as the core really uses it: an agent's turn calls a plugin's tool,
a conversation runs a plugin's workflow, the event dispatcher hands events to a plugin's
subscriber, a worker runs a plugin's job handler, requests pass through plugins' hooks and
reach their routes; and a plugin gets only the capabilities it was granted."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agents.services import agent_create
from core.events import events_dispatch
from plugins.models import Plugin, PluginData
from plugins.runtime import plugins_sync, plugins_unload_all
from tests.conversations.conftest import FakeOpenAI

pytestmark = pytest.mark.django_db


@pytest.fixture
def openai_server(settings) -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    settings.OPENAI_BASE_URL = fake.url
    settings.OPENAI_API_KEY = "sk-test"
    settings.CHATTER_LLM_MAX_RETRIES = 0
    settings.CHATTER_LLM_TIMEOUT = 5
    yield fake
    fake.close()


class _Rates(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        _Rates.seen.append({k.lower(): v for k, v in self.headers.items()})
        body = json.dumps({"base": "EUR", "rates": {"USD": 1.25, "GBP": 0.8}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def rates_url(settings) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Rates)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.CHATTER_OUTBOUND_ALLOWLIST = [f"127.0.0.1:{server.server_address[1]}"]
    _Rates.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}/rates"
    server.shutdown()
    server.server_close()


def _tool_turn(api_client, user, openai_server, args: dict[str, Any]) -> dict[str, Any]:
    plugins_sync()  # as the request that created the agent would have
    agent = agent_create(
        actor=user, name="Units", slug="units", model="openai:m", tools=["unit_convert"]
    )
    conversation = api_client.post(
        "/api/v1/conversations/", {"agent": agent.slug}, format="json"
    ).json()
    openai_server.script = [
        {"tool_calls": [{"id": "call-1", "name": "unit_convert", "args": args}]},
        {"content": "Done."},
    ]
    response = api_client.post(
        f"/api/v1/conversations/{conversation['id']}/messages/",
        {"content": "Convert, please."},
        format="json",
    )
    assert response.status_code == 201, response.content
    [call] = response.json()["assistant_message"]["tool_calls"]
    return call


def test_an_agents_turn_calls_the_plugins_tool(api_client, user, install, wheels, openai_server):
    install(wheels["unit_convert"], enable=True, config={"precision": 3})

    call = _tool_turn(
        api_client, user, openai_server, {"value": 10, "from_unit": "km", "to_unit": "mi"}
    )

    assert call["error"] == ""
    assert json.loads(call["result"]) == {"value": 10, "from": "km", "to": "mi", "result": 6.214}
    tools = openai_server.requests[0]["tools"]
    assert [t["function"]["name"] for t in tools] == ["unit_convert"]
    assert set(tools[0]["function"]["parameters"]["properties"]) == {
        "value",
        "from_unit",
        "to_unit",
    }


def test_a_plugin_calling_the_network_without_the_grant_is_refused(
    api_client, staff_client, user, install, wheels, openai_server, rates_url
):
    plugin = install(
        wheels["unit_convert"],
        enable=True,
        config={"rates_url": rates_url, "rates_api_key": "k-123"},
    )

    call = _tool_turn(
        api_client, user, openai_server, {"value": 10, "from_unit": "EUR", "to_unit": "USD"}
    )

    assert "was not granted 'network'" in call["result"]
    assert _Rates.seen == []  # nothing left the process
    row = Plugin.objects.get(pk=plugin["id"])
    assert (row.error_count, row.last_error_point) == (1, "tool:unit_convert")
    assert "PluginPermissionDenied" in row.last_error

    # Granted, the same call reaches the rates source, with the configured secret.
    granted = staff_client.post(
        f"/api/v1/plugins/{plugin['id']}/enable/", {"permissions": ["network"]}, format="json"
    )
    assert granted.json()["permissions_granted"] == ["network"]
    plugins_sync()
    openai_server.requests.clear()
    openai_server.script = [
        {
            "tool_calls": [
                {
                    "id": "c2",
                    "name": "unit_convert",
                    "args": {"value": 10, "from_unit": "EUR", "to_unit": "USD"},
                }
            ]
        },
        {"content": "Done."},
    ]
    conversation = api_client.post("/api/v1/conversations/", {"agent": "units"}, format="json")
    reply = api_client.post(
        f"/api/v1/conversations/{conversation.json()['id']}/messages/",
        {"content": "Again."},
        format="json",
    ).json()["assistant_message"]
    assert json.loads(reply["tool_calls"][0]["result"])["result"] == 12.5
    assert _Rates.seen[0]["authorization"] == "Bearer k-123"
    assert Plugin.objects.get(pk=plugin["id"]).consecutive_failures == 0


def test_a_subscriber_gets_committed_events_only_with_events_read(
    api_client, staff_client, install, wheels
):
    plugin = install(wheels["event_logger"], enable=True)  # events.read not granted
    api_client.post("/api/v1/conversations/", {"title": "one"}, format="json")
    events_dispatch()
    assert not PluginData.objects.exists()

    staff_client.post(
        f"/api/v1/plugins/{plugin['id']}/enable/", {"permissions": ["events.read"]}, format="json"
    )
    for title in ("two", "three"):
        api_client.post("/api/v1/conversations/", {"title": title}, format="json")
    events_dispatch()

    stats = staff_client.get("/api/v1/plugins/event_logger/stats")
    assert stats.status_code == 200, stats.content
    assert stats.json() == {"counts": {"conversation.started": 2}, "total": 2}
    notes = staff_client.get("/api/v1/plugins/event_logger/notes").json()
    assert [n["type"] for n in notes] == ["conversation.started"] * 2
    # A staff-only route refuses others; a user may read the open one.
    assert api_client.get("/api/v1/plugins/event_logger/notes").status_code == 403
    assert api_client.get("/api/v1/plugins/event_logger/stats").status_code == 200


def test_a_conversation_runs_the_plugins_workflow(api_client, install, wheels):
    install(wheels["sink"], enable=True, config={"greeting": "Echo"})

    created = api_client.post("/api/v1/conversations/", {"workflow": "sink_echo"}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["workflow"] == "sink_echo"
    reply = api_client.post(
        f"/api/v1/conversations/{created.json()['id']}/messages/",
        {"content": "ping"},
        format="json",
    )

    assert reply.status_code == 201, reply.content
    assert reply.json()["assistant_message"]["content"] == "Echo: ping (1 messages)"
    unknown = api_client.post("/api/v1/conversations/", {"workflow": "nope"}, format="json")
    assert unknown.status_code == 400
    assert "sink_echo" in unknown.json()["error"]["details"]["workflow"][0]


def test_request_hooks_refuse_add_headers_and_never_see_credentials(api_client, install, wheels):
    install(wheels["sink"], enable=True)

    seen = api_client.post("/api/v1/plugins/sink/echo", {"a": 1}, format="json")
    assert seen.status_code == 200, seen.content
    assert seen["X-Sink-Seen"] == "1.0.0 200"
    assert "Set-Cookie" not in seen  # only X- headers may be added
    assert seen.json()["saw_authorization"] is False
    assert seen.json()["body"] == {"a": 1} and seen.json()["user_id"] is not None

    blocked = api_client.get("/api/v1/whoami/", HTTP_X_SINK_BLOCK="1")
    assert blocked.status_code == 403
    assert blocked.json() == {
        "error": {
            "code": "sink_blocked",
            "message": "The sink plugin refuses this request.",
            "details": {"plugin": "sink"},
        }
    }


def test_a_slow_hook_is_cut_off_by_its_budget_and_the_request_goes_on(
    api_client, install, wheels, settings
):
    settings.CHATTER_PLUGIN_MIDDLEWARE_BUDGET = 0.2
    plugin = install(wheels["sink"], enable=True, config={"slow_middleware": 1.0})

    response = api_client.get("/api/v1/whoami/", HTTP_X_SINK_BLOCK="1")

    assert response.status_code == 200  # the hook would have refused it, had it answered
    row = Plugin.objects.get(pk=plugin["id"])
    assert (row.timeout_count, row.last_error_point) == (1, "middleware:before")


def test_routes_answer_refuse_and_fail_in_the_envelope(api_client, install, wheels):
    plugin = install(wheels["sink"], enable=True)

    refused = api_client.get("/api/v1/plugins/sink/refuse")
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "sink_bad"
    failed = api_client.get("/api/v1/plugins/sink/boom")
    assert failed.status_code == 502
    assert failed.json()["error"]["code"] == "plugin_failed"
    assert failed.json()["error"]["details"] == {"plugin": "sink", "point": "route:boom"}
    assert api_client.get("/api/v1/plugins/sink/nowhere").status_code == 404
    assert api_client.get("/api/v1/plugins/unknown_one/echo").status_code == 404
    denied = api_client.get("/api/v1/plugins/sink/search")
    assert denied.status_code == 502
    assert Plugin.objects.get(pk=plugin["id"]).error_count == 2  # boom, search; not refuse


def test_a_disabled_plugin_is_gone_from_every_extension_point(
    api_client, staff_client, install, wheels
):
    plugin = install(wheels["sink"], enable=True)
    assert api_client.get("/api/v1/plugins/sink/echo").status_code == 200
    assert "sink_shout" in [t["name"] for t in api_client.get("/api/v1/agents/tools/").json()]

    staff_client.post(f"/api/v1/plugins/{plugin['id']}/disable/")

    assert api_client.get("/api/v1/plugins/sink/echo").status_code == 404
    tools = [t["name"] for t in api_client.get("/api/v1/agents/tools/").json()]
    assert "sink_shout" not in tools
    response = api_client.post("/api/v1/conversations/", {"workflow": "sink_echo"}, format="json")
    assert response.status_code == 400
    assert "X-Sink-Seen" not in api_client.get("/api/v1/whoami/")


@pytest.mark.django_db(transaction=True)
def test_a_worker_runs_the_plugins_job_handler_after_loading_it_itself(
    staff_client, install, wheels
):
    from jobs import worker
    from jobs.models import Job, JobStatus

    plugin = install(wheels["sink"], enable=True)
    plugins_unload_all()  # a worker process that has not seen the plugin yet

    response = staff_client.post(
        "/api/v1/jobs/", {"handler": "sink.count", "args": {"by": 3}}, format="json"
    )
    assert response.status_code == 201, response.content
    plugins_unload_all()
    try:
        assert worker.run_next_job() == JobStatus.SUCCEEDED
    finally:
        worker.executor_connection_close()

    job = Job.objects.get(pk=response.json()["id"])
    assert job.result == {"runs": 3, "attempt": 1}
    assert PluginData.objects.get(plugin_id=plugin["id"], key="runs").value == 3
