"""A failing plugin is contained, counted and disabled after a run of failures; state
changes reach a process through the generation; health; secrets never leave unmasked."""

from __future__ import annotations

import pytest

from accounts.models import AuditLog
from core.models import Event
from plugins.models import Plugin
from plugins.runtime import loaded_plugin, plugins_sync
from plugins.services import plugin_configure

pytestmark = pytest.mark.django_db


def test_repeated_failures_disable_the_plugin_everywhere_and_the_platform_keeps_serving(
    api_client, install, wheels, settings
):
    settings.CHATTER_PLUGIN_MAX_CONSECUTIVE_FAILURES = 3
    plugin = install(wheels["sink"], enable=True)

    # Its middleware succeeds on each of these requests: that does not end the run of
    # failures of its route.
    codes = [api_client.get("/api/v1/plugins/sink/boom").status_code for _ in range(4)]

    assert codes == [502, 502, 502, 404]  # the third in a row disabled it
    row = Plugin.objects.get(pk=plugin["id"])
    assert (row.enabled, row.error_count, row.consecutive_failures) == (False, 3, 3)
    assert row.auto_disabled_at is not None
    assert row.disabled_reason.startswith("Disabled automatically after 3 consecutive failures")
    audit = AuditLog.objects.get(action="plugin.auto_disabled")
    assert audit.actor is None and audit.target_id == plugin["id"]
    alert = Event.objects.get(type="system.alert", data__code="plugin_auto_disabled")
    assert alert.data["details"] == {
        "plugin_id": plugin["id"],
        "plugin": "sink",
        "point": "route:boom",
    }
    assert api_client.get("/api/v1/whoami/").status_code == 200
    assert "X-Sink-Seen" not in api_client.get("/api/v1/whoami/")


def test_a_change_made_elsewhere_reaches_this_process_at_its_next_request(
    api_client, staff_user, install, wheels
):
    plugin = install(wheels["sink"], enable=True, config={"greeting": "one"})
    assert api_client.get("/api/v1/plugins/sink/echo").json()["greeting"] == "one"
    loaded_before = loaded_plugin("sink")

    # Another process's change: only the row and the generation move.
    plugin_configure(
        plugin=Plugin.objects.get(pk=plugin["id"]), actor=staff_user, config={"greeting": "two"}
    )

    assert loaded_plugin("sink") is loaded_before  # nothing happens until a request asks
    assert api_client.get("/api/v1/plugins/sink/echo").json()["greeting"] == "two"
    assert loaded_plugin("sink") is not loaded_before
    assert plugins_sync() is False  # up to date: one read of the generation, nothing loaded


def test_an_update_reaches_running_processes_with_its_new_code(
    api_client, staff_client, install, wheels, tmp_path
):
    from tests.plugins.conftest import build_variant, upload

    install(wheels["sink"], enable=True)
    assert api_client.get("/api/v1/plugins/sink/echo").json()["version"] == "1.0.0"

    v2 = build_variant(
        tmp_path, "sink", version="2.0.0", code=lambda text: text.replace('"1.0.0"', '"2.0.0"')
    )
    assert upload(staff_client, v2).status_code == 200

    assert api_client.get("/api/v1/plugins/sink/echo").json()["version"] == "2.0.0"
    assert Plugin.objects.get().enabled is True


def test_health_reports_each_plugin_with_its_own_check(staff_client, install, wheels, settings):
    install(wheels["unit_convert"])  # installed, not enabled
    sink = install(wheels["sink"], enable=True)

    healthy = staff_client.get("/api/v1/plugins/health/")
    assert healthy.status_code == 200
    body = healthy.json()
    assert body["status"] == "ok"
    by_name = {p["name"]: p for p in body["plugins"]}
    assert by_name["unit_convert"]["status"] == "disabled"
    assert by_name["sink"]["status"] == "ok" and by_name["sink"]["loaded"] is True
    assert by_name["sink"]["check"] == {"ok": True, "details": {"version": "1.0.0"}}

    staff_client.post(
        f"/api/v1/plugins/{sink['id']}/configure/", {"config": {"unhealthy": True}}, format="json"
    )
    failing = staff_client.get("/api/v1/plugins/health/").json()
    sink_health = next(p for p in failing["plugins"] if p["name"] == "sink")
    assert failing["status"] == "degraded"
    assert sink_health["status"] == "failing"
    assert sink_health["check"]["ok"] is False
    assert "unhealthy by configuration" in sink_health["check"]["error"]
    assert sink_health["error_count"] == 1 and sink_health["last_error_point"] == "health"


def test_secrets_are_masked_in_the_api_and_the_admin_and_kept_when_sent_back(
    staff_client, staff_user, install, wheels, client
):
    plugin = install(wheels["sink"], config={"greeting": "hi", "token": "tok-SECRET"})
    assert plugin["config"] == {"greeting": "hi", "token": "********"}

    again = staff_client.post(
        f"/api/v1/plugins/{plugin['id']}/configure/",
        {"config": {"greeting": "hello", "token": "********"}},
        format="json",
    )
    assert again.status_code == 200
    assert Plugin.objects.get().config == {"greeting": "hello", "token": "tok-SECRET"}
    audit = AuditLog.objects.filter(action="plugin.configured").order_by("-id").first()
    assert audit.details == {"changed": ["greeting"]}
    invalid = staff_client.post(
        f"/api/v1/plugins/{plugin['id']}/configure/",
        {"config": {"greeting": 5, "other": 1}},
        format="json",
    )
    assert invalid.status_code == 400
    assert invalid.json()["error"]["code"] == "invalid_config"

    client.force_login(staff_user)
    page = client.get(f"/admin/plugins/plugin/{plugin['id']}/change/")
    assert page.status_code == 200
    assert b"tok-SECRET" not in page.content and b"********" in page.content
    assert b"tok-SECRET" not in staff_client.get(f"/api/v1/plugins/{plugin['id']}/").content


def test_enable_refuses_permissions_not_asked_for_and_a_configuration_off_its_schema(
    staff_client, install, wheels, tmp_path
):
    from tests.plugins.conftest import build_variant

    plugin = install(wheels["unit_convert"])
    response = staff_client.post(
        f"/api/v1/plugins/{plugin['id']}/enable/",
        {"permissions": ["network", "events.read"]},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["details"] == {
        "permissions": ["events.read: not asked for by unit_convert"]
    }

    needs_config = build_variant(
        tmp_path,
        "sink",
        manifest={"config_schema": {"type": "object", "required": ["greeting"]}},
    )
    other = install(needs_config)
    refused = staff_client.post(f"/api/v1/plugins/{other['id']}/enable/", {}, format="json")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "configuration_required"
    assert not Plugin.objects.filter(enabled=True).exists()


def test_the_admin_lists_status_and_its_actions_call_the_services(
    client, staff_user, install, wheels
):
    plugin = install(wheels["sink"])
    client.force_login(staff_user)

    page = client.get("/admin/plugins/plugin/")
    assert page.status_code == 200 and b">disabled<" in page.content

    client.post(
        "/admin/plugins/plugin/",
        {"action": "enable", "_selected_action": [plugin["id"]]},
    )
    assert Plugin.objects.get().enabled is True
    assert AuditLog.objects.filter(action="plugin.enabled", actor=staff_user).exists()
    assert b">ok<" in client.get("/admin/plugins/plugin/").content
    client.post(
        "/admin/plugins/plugin/",
        {"action": "disable", "_selected_action": [plugin["id"]]},
    )
    assert Plugin.objects.get().enabled is False


def test_the_admin_installs_an_uploaded_wheel(client, staff_user, wheels):
    from django.core.files.uploadedfile import SimpleUploadedFile

    wheel = wheels["event_logger"]
    client.force_login(staff_user)

    response = client.post(
        "/admin/plugins/plugin/add/",
        {"wheel": SimpleUploadedFile(wheel.filename, wheel.data), "sha256": wheel.sha256},
    )

    assert response.status_code == 302, response.content[:2000]
    assert Plugin.objects.get().name == "event_logger"
    assert AuditLog.objects.filter(action="plugin.installed", actor=staff_user).exists()


def test_a_failing_subscriber_holds_no_event_back(api_client, install, tmp_path):
    from core.events import events_dispatch
    from tests.plugins.conftest import build_variant

    broken = build_variant(
        tmp_path,
        "event_logger",
        code=lambda text: text.replace(
            "    wanted = ctx.config",
            '    raise RuntimeError("subscriber down")\n    wanted = ctx.config',
        ),
    )
    plugin = install(broken, enable=True, permissions=["events.read"])
    for title in ("a", "b"):
        api_client.post("/api/v1/conversations/", {"title": title}, format="json")

    waiting = Event.objects.filter(dispatched_at__isnull=True).count()
    assert waiting >= 2  # the two conversations' (and the users' the fixtures made)

    assert events_dispatch() == waiting  # every one marked dispatched: webhooks got them
    assert not Event.objects.filter(dispatched_at__isnull=True).exists()
    row = Plugin.objects.get(pk=plugin["id"])
    # Each event failed once; the plugin disabled itself at the fifth in a row.
    assert row.error_count == waiting and row.last_error_point == "subscriber"
    assert row.enabled is (waiting < 5)
    assert "subscriber down" in row.last_error


def test_an_update_of_an_enabled_plugin_that_cannot_load_is_refused_and_the_old_one_serves(
    api_client, staff_client, install, wheels, tmp_path
):
    from tests.plugins.conftest import build_variant, upload

    install(wheels["sink"], enable=True)
    broken = build_variant(
        tmp_path,
        "sink",
        version="2.0.0",
        code=lambda text: text + "\nraise RuntimeError('2.0.0 is broken')\n",
    )

    refused = upload(staff_client, broken)

    assert refused.status_code == 409, refused.content
    error = refused.json()["error"]
    assert error["code"] == "plugin_load_failed" and "2.0.0 is broken" in error["message"]
    row = Plugin.objects.get()
    assert (row.version, row.enabled) == ("1.0.0", True)
    assert api_client.get("/api/v1/plugins/sink/echo").json()["version"] == "1.0.0"
    assert not AuditLog.objects.filter(action="plugin.updated").exists()
