"""The layers of DESIGN.md hold, and the contracts that say so really fail when broken."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT = str(Path(sys.executable).with_name("lint-imports"))


def _packages() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return config["tool"]["importlinter"]["root_packages"]


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LINT, "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def test_the_code_keeps_its_layers() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_app_importing_one_above_it_breaks_the_contract(tmp_path: Path) -> None:
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    for package in _packages():
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    with (tmp_path / "accounts" / "admin.py").open("a") as admin:
        admin.write("\nfrom conversations.models import Conversation  # noqa\n")
    with (tmp_path / "web" / "health.py").open("a") as health:
        health.write("\nfrom knowledge.embeddings import embedding_status  # noqa\n")

    result = _lint(tmp_path)

    assert result.returncode != 0
    assert "accounts is not allowed to import conversations" in result.stdout
    assert "web.health -> knowledge.embeddings" in result.stdout
