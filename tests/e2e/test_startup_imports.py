"""What every process of `make run` imports at start: not the embedding stack.

torch and sentence-transformers take seconds to import and load; the web workers, the job
cluster, the clock and `serve` all set Django up, and the banner names the embedding space.
None of that may load them: the model loads on the first embedding.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from django.conf import settings

pytestmark = pytest.mark.e2e

EMBEDDING_STACK = ["torch", "sentence_transformers", "transformers"]

PROBE = """
import json, sys, django
django.setup()
from django.urls import get_resolver
get_resolver().url_patterns  # what a web worker loads on its first request
from chatter_project.launcher import active_models
chat, space = active_models()
{extra}
print(json.dumps({{"space": space, "loaded": [m for m in {stack!r} if m in sys.modules]}}))
"""


def probe(extra: str = "") -> dict[str, object]:
    env = {
        **{
            k: v for k, v in os.environ.items() if k not in {"OPENAI_API_KEY", "CHATTER_EMBEDDINGS"}
        },
        "DJANGO_SETTINGS_MODULE": "chatter_project.settings",
        "CHATTER_DATA_DIR": str(settings.DATA_DIR),
    }
    output = subprocess.run(
        [sys.executable, "-c", PROBE.format(extra=extra, stack=EMBEDDING_STACK)],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(output.splitlines()[-1])


def test_setup_urls_and_the_banner_leave_the_embedding_stack_unloaded():
    result = probe()

    assert result == {"space": "local:all-MiniLM-L6-v2", "loaded": []}


def test_the_probe_sees_the_stack_once_the_model_is_used():
    result = probe("from knowledge.embeddings import active_embedder; active_embedder().model")

    assert "torch" in result["loaded"]  # type: ignore[operator]
