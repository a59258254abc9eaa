"""Installing plugins: the wheel checks, staff only, audited; updates, uninstall, discovery."""

from __future__ import annotations

import io
import sys
import zipfile

import pytest

from accounts.models import AuditLog
from plugins.models import Plugin, PluginData, PluginWheel
from tests.plugins.conftest import Wheel, build_variant, upload

pytestmark = pytest.mark.django_db


def test_staff_installs_a_wheel_disabled_and_the_audit_log_says_who(
    staff_client, staff_user, wheels
):
    wheel = wheels["unit_convert"]

    response = upload(staff_client, wheel)

    assert response.status_code == 201, response.content
    body = response.json()
    assert {k: body[k] for k in ("name", "version", "type", "source", "enabled", "status")} == {
        "name": "unit_convert",
        "version": "1.0.0",
        "type": "tool",
        "source": "upload",
        "enabled": False,
        "status": "disabled",
    }
    assert body["capabilities"] == ["tools"]
    assert body["permissions_requested"] == ["network"]
    assert body["permissions_granted"] == []
    stored = PluginWheel.objects.get(plugin_id=body["id"])
    assert (stored.sha256, bytes(stored.data)) == (wheel.sha256, wheel.data)
    entry = AuditLog.objects.get(action="plugin.installed")
    assert entry.actor == staff_user and entry.target_id == body["id"]
    assert entry.details["sha256"] == wheel.sha256
    listed = staff_client.get("/api/v1/plugins/").json()
    assert [p["name"] for p in listed["results"]] == ["unit_convert"]
    assert staff_client.get(f"/api/v1/plugins/{body['id']}/").json()["name"] == "unit_convert"


def test_only_staff_manage_plugins(api_client, staff_client, wheels):
    refused = upload(api_client, wheels["unit_convert"])
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"
    assert not Plugin.objects.exists()

    plugin = upload(staff_client, wheels["unit_convert"]).json()
    for method, path in [
        ("get", "/api/v1/plugins/"),
        ("get", f"/api/v1/plugins/{plugin['id']}/"),
        ("get", "/api/v1/plugins/health/"),
        ("post", f"/api/v1/plugins/{plugin['id']}/enable/"),
        ("post", f"/api/v1/plugins/{plugin['id']}/disable/"),
        ("post", f"/api/v1/plugins/{plugin['id']}/configure/"),
        ("post", f"/api/v1/plugins/{plugin['id']}/uninstall/"),
    ]:
        response = getattr(api_client, method)(path, {}, format="json")
        assert response.status_code == 403, (method, path)
    assert Plugin.objects.get().enabled is False


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, body in files.items():
            archive.writestr(name, body)
    return buffer.getvalue()


def _without(wheel: Wheel, *names: str) -> Wheel:
    with zipfile.ZipFile(io.BytesIO(wheel.data)) as archive:
        files = {n: archive.read(n) for n in archive.namelist() if not n.endswith(names)}
    return Wheel(wheel.filename, _zip(files))


def _with(wheel: Wheel, extra: dict[str, bytes]) -> Wheel:
    with zipfile.ZipFile(io.BytesIO(wheel.data)) as archive:
        files = {n: archive.read(n) for n in archive.namelist()}
    return Wheel(wheel.filename, _zip({**files, **extra}))


def test_a_wheel_that_fails_a_check_is_a_400_and_nothing_is_stored(
    staff_client, wheels, settings, tmp_path
):
    good = wheels["unit_convert"]
    manifest = "unit_convert/chatter_plugin.json"
    cases = {
        "hash_mismatch": (good, "0" * 64),
        "invalid_wheel": (Wheel(good.filename, b"PK\x03\x04 not really a zip"), None),
        "missing_manifest": (_without(good, "chatter_plugin.json"), None),
        "unsafe_wheel": (_with(good, {"../evil.py": b"x = 1"}), None),
        # A file changed after RECORD was written: RECORD's hash no longer matches.
        "hash_mismatch ": (_with(good, {manifest: b'{"name": "unit_convert"}'}), None),
        "invalid_manifest": (
            build_variant(tmp_path, "unit_convert", manifest={"permissions": ["root"]}),
            None,
        ),
        "incompatible_version": (
            build_variant(tmp_path, "unit_convert", manifest={"chatter_versions": ">=99"}),
            None,
        ),
        "unsupported_wheel": (
            Wheel(good.filename.replace("none-any", "cp311-linux_x86_64"), good.data),
            None,
        ),
    }
    for code, (wheel, sha) in cases.items():
        response = upload(staff_client, wheel, sha256=sha)
        assert response.status_code == 400, (code, response.content)
        error = response.json()["error"]
        assert error["code"] == code.strip(), (code, error)
        assert set(error) == {"code", "message", "details"}

    settings.CHATTER_PLUGIN_MAX_WHEEL_BYTES = len(good.data) - 1
    oversize = upload(staff_client, good)
    assert oversize.status_code == 400
    assert oversize.json()["error"]["code"] == "wheel_too_large"
    assert not Plugin.objects.exists() and not PluginWheel.objects.exists()
    assert not AuditLog.objects.filter(action__startswith="plugin.").exists()


def test_a_plugin_may_not_bring_a_module_the_platform_has(staff_client, wheels):
    from plugins.wheels import record_hash

    with zipfile.ZipFile(io.BytesIO(wheels["sink"].data)) as archive:
        files = {n: archive.read(n) for n in archive.namelist()}
    hijack = b"hijacked = True\n"
    files["core/__init__.py"] = hijack
    record = next(n for n in files if n.endswith("RECORD"))
    files[record] += f"core/__init__.py,{record_hash(hijack)},{len(hijack)}\n".encode()

    response = upload(staff_client, Wheel(wheels["sink"].filename, _zip(files)))

    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "module_conflict"
    assert response.json()["error"]["details"] == {"modules": ["core"]}


def test_an_update_keeps_a_configuration_that_fits_and_refuses_one_that_does_not(
    staff_client, install, wheels, tmp_path
):
    plugin = install(wheels["sink"], config={"greeting": "hello", "token": "s3cret"})
    # 1.1.0: same schema, the configuration carries over.
    response = upload(staff_client, build_variant(tmp_path, "sink", version="1.1.0"))
    assert response.status_code == 200, response.content
    assert response.json()["version"] == "1.1.0"
    assert Plugin.objects.get().config == {"greeting": "hello", "token": "s3cret"}

    # 2.0.0 wants greeting to be an integer: refused unless a fitting configuration comes.
    stricter = {
        "config_schema": {
            "type": "object",
            "properties": {
                "greeting": {"type": "integer"},
                "token": {"type": "string", "format": "password"},
            },
        }
    }
    v2 = build_variant(tmp_path, "sink", version="2.0.0", manifest=stricter)
    refused = upload(staff_client, v2)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "config_incompatible"
    assert refused.json()["error"]["details"] == {"greeting": ["'hello' is not of type 'integer'"]}
    assert Plugin.objects.get().version == "1.1.0"

    migrated = upload(staff_client, v2, config='{"greeting": 7, "token": "********"}')
    assert migrated.status_code == 200, migrated.content
    row = Plugin.objects.get()
    assert (row.version, row.config) == ("2.0.0", {"greeting": 7, "token": "s3cret"})
    assert migrated.json()["config"] == {"greeting": 7, "token": "********"}
    again = upload(staff_client, v2)
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_installed"
    actions = list(AuditLog.objects.filter(target_id=plugin["id"]).values_list("action", flat=True))
    assert sorted(actions) == sorted(
        ["plugin.installed", "plugin.configured", "plugin.updated", "plugin.updated"]
    )


def test_uninstall_removes_the_plugin_its_wheel_and_its_data(staff_client, install, wheels):
    plugin = install(wheels["event_logger"])
    PluginData.objects.create(plugin_id=plugin["id"], key="note:x", value={"a": 1})

    response = staff_client.post(f"/api/v1/plugins/{plugin['id']}/uninstall/")

    assert response.status_code == 200
    assert response.json() == {"name": "event_logger", "uninstalled": True}
    assert not Plugin.objects.exists()
    assert not PluginWheel.objects.exists() and not PluginData.objects.exists()
    assert AuditLog.objects.filter(action="plugin.uninstalled", target_id=plugin["id"]).exists()
    assert staff_client.get(f"/api/v1/plugins/{plugin['id']}/").status_code == 404


def test_a_pip_installed_plugin_is_discovered_through_its_entry_point(
    staff_client, wheels, tmp_path, monkeypatch
):
    # What pip does with a wheel: unpack it into a directory on sys.path (site-packages).
    site = tmp_path / "site-packages"
    with zipfile.ZipFile(io.BytesIO(wheels["unit_convert"].data)) as archive:
        archive.extractall(site)
    monkeypatch.syspath_prepend(str(site))

    listed = staff_client.get("/api/v1/plugins/").json()["results"]

    assert [(p["name"], p["source"], p["enabled"]) for p in listed] == [
        ("unit_convert", "entry_point", False)
    ]
    enabled = staff_client.post(f"/api/v1/plugins/{listed[0]['id']}/enable/", {}, format="json")
    assert enabled.status_code == 200, enabled.content
    tools = staff_client.get("/api/v1/agents/tools/").json()
    assert {"name": "unit_convert", "source": "plugin:unit_convert"}.items() <= next(
        t for t in tools if t["name"] == "unit_convert"
    ).items()
    # An upload may not take the name of the pip-installed one.
    clash = upload(staff_client, wheels["unit_convert"])
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "installed_by_pip"
    sys.modules.pop("unit_convert", None)


def test_the_build_command_makes_the_wheel_the_tests_upload(tmp_path, wheels):
    from io import StringIO

    from django.core.management import call_command

    from tests.plugins.conftest import SOURCES

    out = StringIO()
    call_command(
        "plugins", "build", str(SOURCES["unit_convert"]), "--output", str(tmp_path), stdout=out
    )

    built = tmp_path / "chatter_unit_convert-1.0.0-py3-none-any.whl"
    assert built.read_bytes() == wheels["unit_convert"].data  # reproducible: fixed timestamps
    assert out.getvalue().strip() == f"{built} sha256={wheels['unit_convert'].sha256}"


def test_the_list_command_says_when_nothing_is_installed_then_lists_an_upload(staff_client, wheels):
    from io import StringIO

    from django.core.management import call_command

    empty = StringIO()
    call_command("plugins", "list", stdout=empty)
    assert empty.getvalue().startswith("No plugins installed")

    assert upload(staff_client, wheels["unit_convert"]).status_code == 201
    listed = StringIO()
    call_command("plugins", "list", stdout=listed)
    assert listed.getvalue().split()[0] == "unit_convert"
