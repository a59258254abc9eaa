"""Start-up stays light: the conversations app loads LangGraph with the first turn, not
when Django starts (issue 10: it was most of django.setup()'s time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from django.conf import settings

SCRIPT = """
import json, sys
import django
django.setup()
print(json.dumps({name: name in sys.modules for name in ("langgraph", "conversations.graph")}))
"""


def test_django_setup_does_not_import_langgraph():
    environ = {**os.environ, "DJANGO_SETTINGS_MODULE": "chatter_project.settings"}

    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=environ,
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == {"langgraph": False, "conversations.graph": False}
