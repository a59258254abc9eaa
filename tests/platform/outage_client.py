"""A Chatter process for tests/platform/test_database_outage.py: reads `GET <path> [key]`
lines on stdin, answers each with one JSON line (status and body) on stdout."""

from __future__ import annotations

import json
import os
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatter_project.settings")
django.setup()

from django.test import Client  # noqa: E402

client = Client()
print("ready", flush=True)
for line in sys.stdin:
    parts = line.split()
    if not parts:
        continue
    _, path, *key = parts
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key[0]}"} if key else {}
    response = client.get(path, **headers)
    try:
        body = response.json()
    except ValueError:
        body = response.content.decode(errors="replace")[:500]
    print(json.dumps({"status": response.status_code, "body": body}), flush=True)
