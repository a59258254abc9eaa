"""Plugins' tests install real wheels, built from the example plugins' source trees (and a
test plugin's, tests/plugins/sample_plugins/sink) by the same builder `manage.py plugins
build` uses, and uploaded through POST /api/v1/plugins/install/."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from plugins.runtime import plugins_unload_all
from plugins.wheels import wheel_build

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {
    "unit_convert": ROOT / "examples/plugins/unit_convert",
    "event_logger": ROOT / "examples/plugins/event_logger",
    "sink": Path(__file__).resolve().parent / "sample_plugins/sink",
}


@dataclass(frozen=True)
class Wheel:
    filename: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def build_variant(
    tmp: Path,
    name: str,
    *,
    version: str | None = None,
    manifest: dict[str, Any] | None = None,
    code: Callable[[str], str] | None = None,
) -> Wheel:
    """A wheel of a plugin's source tree with its version, manifest or code changed."""
    source = tmp / f"{name}-{version or 'same'}-{abs(hash(json.dumps(manifest or {})))}"
    shutil.rmtree(source, ignore_errors=True)
    shutil.copytree(SOURCES[name], source, ignore=shutil.ignore_patterns("__pycache__"))
    manifest_path = source / name / "chatter_plugin.json"
    document = json.loads(manifest_path.read_text())
    if version:
        document["version"] = version
        pyproject = source / "pyproject.toml"
        pyproject.write_text(
            pyproject.read_text().replace('version = "1.0.0"', f'version = "{version}"')
        )
    document.update(manifest or {})
    manifest_path.write_text(json.dumps(document))
    if code is not None:
        plugin_py = source / name / "plugin.py"
        plugin_py.write_text(code(plugin_py.read_text()))
    return Wheel(*wheel_build(source))


@pytest.fixture(scope="session")
def wheels() -> dict[str, Wheel]:
    return {name: Wheel(*wheel_build(source)) for name, source in SOURCES.items()}


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("plugin-dir")


@pytest.fixture(autouse=True)
def _plugins_isolated(settings: Any, plugin_dir: Path) -> Iterator[None]:
    settings.CHATTER_PLUGIN_DIR = plugin_dir
    plugins_unload_all()
    yield
    # What this process loaded belongs to this test's (rolled-back) rows.
    plugins_unload_all()


def upload(client: Any, wheel: Wheel, *, sha256: str | None = None, **extra: Any) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return client.post(
        "/api/v1/plugins/install/",
        {
            "file": SimpleUploadedFile(wheel.filename, wheel.data),
            "sha256": sha256 or wheel.sha256,
            **extra,
        },
        format="multipart",
    )


@pytest.fixture
def install(staff_client: Any) -> Callable[..., dict[str, Any]]:
    """Install a wheel as staff and, if asked, enable it: the plugin's API representation."""

    def install(
        wheel: Wheel,
        *,
        enable: bool = False,
        permissions: list[str] | None = None,
        config: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        response = upload(staff_client, wheel)
        assert response.status_code == 201, response.content
        plugin = response.json()
        if config is not None:
            response = staff_client.post(
                f"/api/v1/plugins/{plugin['id']}/configure/", {"config": config}, format="json"
            )
            assert response.status_code == 200, response.content
            plugin = response.json()
        if enable:
            body = {} if permissions is None else {"permissions": permissions}
            response = staff_client.post(
                f"/api/v1/plugins/{plugin['id']}/enable/", body, format="json"
            )
            assert response.status_code == 200, response.content
            plugin = response.json()
        return plugin

    return install
