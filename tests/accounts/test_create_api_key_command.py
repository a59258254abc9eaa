from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from accounts.models import AuditLog, User

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out, err = StringIO(), StringIO()
    call_command("create_api_key", *args, stdout=out, stderr=err)
    return out.getvalue()


def test_it_creates_the_user_and_prints_the_key_alone_on_the_last_line():
    output = run("--user", "carol", "--staff")

    key = output.strip().splitlines()[-1]
    assert key.startswith("chk_") and " " not in key
    carol = User.objects.get(username="carol")
    assert carol.is_staff and not carol.has_usable_password()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert client.get("/api/v1/whoami/").json() == {
        "username": "carol",
        "is_staff": True,
        "key_prefix": key[:12],
        "scopes": ["read", "write"],
    }
    assert AuditLog.objects.filter(action="user.created", target_repr="carol").exists()


def test_a_second_key_for_an_existing_user_keeps_the_user(user):
    run("--user", "alice")
    run("--user", "alice")

    assert User.objects.filter(username="alice").count() == 1
    assert user.api_keys.count() == 2


def test_bad_scopes_fail_with_a_clear_message_and_create_nothing():
    with pytest.raises(CommandError, match="scope"):
        run("--user", "dave", "--scopes", "read,sudo")

    assert not User.objects.filter(username="dave").exists()
