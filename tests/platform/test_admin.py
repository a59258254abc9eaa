from __future__ import annotations

import re

import pytest
from django.contrib import admin
from django.test import Client
from model_bakery import baker

from accounts.models import ApiKey, AuditLog
from accounts.services import api_key_authenticate, api_key_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(make_user):
    return make_user("root", staff=True, password="pw-for-tests")


@pytest.fixture
def admin_client(operator) -> Client:
    client = Client()
    assert client.login(username="root", password="pw-for-tests")
    return client


def changelist_url(model) -> str:
    return f"/admin/{model._meta.app_label}/{model._meta.model_name}/"


@pytest.mark.parametrize("model", list(admin.site._registry), ids=lambda m: m._meta.label_lower)
def test_every_registered_model_has_a_working_changelist_and_search(admin_client, model):
    model_admin = admin.site._registry[model]

    assert admin_client.get(changelist_url(model)).status_code == 200
    if model_admin.search_fields:
        assert admin_client.get(changelist_url(model), {"q": "x"}).status_code == 200


def _baked(model):
    """A row of ``model`` with every field filled (model-bakery), its relations made too."""
    from django.db.models import GeneratedField
    from pgvector.django import VectorField

    baker.generators.add(GeneratedField, lambda: None)  # PostgreSQL computes it
    vectors = {
        field.name: [0.5] * field.dimensions
        for field in model._meta.concrete_fields
        if isinstance(field, VectorField)
    }
    return baker.make(model, _fill_optional=True, **vectors)


@pytest.mark.parametrize("model", list(admin.site._registry), ids=lambda m: m._meta.label_lower)
def test_every_registered_model_shows_a_filled_row_in_its_list_and_change_page(admin_client, model):
    # With empty tables the list's display methods never run: a row with every field set
    # is what an operator meets.
    row = _baked(model)

    assert admin_client.get(changelist_url(model)).status_code == 200
    assert admin_client.get(f"{changelist_url(model)}{row.pk}/change/").status_code == 200


# An approval's actions resume a paused turn, which a row of random values is not:
# tests/conversations/test_agent_turns.py decides real ones in the admin.
_ACTIONS_NEED_A_REAL_ROW = {"conversations.toolapproval"}


def _actions():
    for model, model_admin in admin.site._registry.items():
        if model._meta.label_lower in _ACTIONS_NEED_A_REAL_ROW:
            continue
        for action in model_admin.actions or []:
            name = action if isinstance(action, str) else action.__name__
            yield pytest.param(model, name, id=f"{model._meta.label_lower}:{name}")


@pytest.mark.parametrize(("model", "action"), list(_actions()))
def test_every_admin_action_on_a_filled_row_answers_without_an_error(admin_client, model, action):
    row = _baked(model)

    response = admin_client.post(
        changelist_url(model), {"action": action, "_selected_action": [row.pk]}
    )

    # Done (a redirect back to the list) or a confirmation page; never a server error.
    assert response.status_code in (200, 302), response.content[:500]


def test_our_models_have_useful_changelists():
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label in {"accounts"}:
            assert len(model_admin.list_display) >= 4, model
            assert model_admin.search_fields, model
            assert model_admin.list_filter, model


def test_creating_a_key_in_the_admin_shows_it_once_and_stores_its_hash(admin_client, operator):
    response = admin_client.post(
        "/admin/accounts/apikey/add/",
        {"user": operator.pk, "name": "from admin", "scopes": ["read"]},
        follow=True,
    )

    assert response.status_code == 200
    shown = re.search(r"chk_[A-Za-z0-9_-]+", response.content.decode())
    assert shown, "the new key is shown to the operator"
    api_key = api_key_authenticate(shown.group(0))
    assert api_key is not None and api_key.name == "from admin" and api_key.scopes == ["read"]
    assert AuditLog.objects.filter(action="api_key.created", actor=operator).exists()
    listing = admin_client.get("/admin/accounts/apikey/").content.decode()
    assert shown.group(0) not in listing


def test_the_revoke_action_revokes_and_reports_the_count(admin_client, operator, user):
    api_key_create(user=user, name="one")
    api_key_create(user=user, name="two")
    ids = [str(pk) for pk in ApiKey.objects.values_list("pk", flat=True)]

    response = admin_client.post(
        "/admin/accounts/apikey/",
        {"action": "revoke_keys", "_selected_action": ids},
        follow=True,
    )

    assert "Revoked 2 API key(s)." in response.content.decode()
    assert not ApiKey.objects.active().exists()
    assert AuditLog.objects.filter(action="api_key.revoked", actor=operator).count() == 2


def test_the_audit_log_cannot_be_edited_or_deleted(admin_client, user):
    api_key_create(user=user, name="one")
    entry = AuditLog.objects.get(action="api_key.created")

    delete = admin_client.post(f"/admin/accounts/auditlog/{entry.pk}/delete/", {"post": "yes"})
    admin_client.post(f"/admin/accounts/auditlog/{entry.pk}/change/", {"action": "forged"})

    assert delete.status_code == 403
    entry.refresh_from_db()
    assert entry.action == "api_key.created"


def test_sign_ins_are_audited(operator):
    client = Client()
    client.login(username="root", password="wrong")
    client.login(username="root", password="pw-for-tests")

    actions = list(AuditLog.objects.order_by("id").values_list("action", flat=True))
    assert actions[-2:] == ["auth.login_failed", "auth.login"]


def test_the_admin_is_styled_without_debug(client, settings):
    settings.DEBUG = False

    response = client.get("/static/admin/css/base.css")

    assert response.status_code == 200
    assert b"body" in b"".join(response.streaming_content)


def test_the_audit_log_footer_counts_entries(admin_client, user):
    api_key_create(user=user, name="one")
    api_key_create(user=user, name="two")
    count = AuditLog.objects.count()

    page = admin_client.get("/admin/accounts/auditlog/").content.decode()

    assert f"{count} entries" in page and f"{count} audit log\n" not in page
    assert ">Audit log<" in page  # the sidebar keeps the model's plural


def test_admin_times_show_seconds(admin_client, user):
    api_key_create(user=user, name="one")
    entry = AuditLog.objects.get(action="api_key.created")

    page = admin_client.get("/admin/accounts/auditlog/").content.decode()

    assert f"{entry.created_at:%Y-%m-%d %H:%M:%S}" in page


def test_django_q2s_task_screens_are_not_beside_the_jobs(admin_client):
    from django_q.models import Failure, OrmQ, Schedule, Success

    index = admin_client.get("/admin/").content.decode()

    for model in (Success, Failure, OrmQ):
        assert not admin.site.is_registered(model)
        assert admin_client.get(changelist_url(model)).status_code == 404
    assert admin.site.is_registered(Schedule)  # the maintenance schedule lives there
    assert "/admin/jobs/job/" in index and "/admin/django_q/success/" not in index


def test_the_schedule_screen_lists_a_schedule_that_has_run(admin_client):
    # Its last run linked to django-q2's task screens, which are not registered: once the
    # maintenance schedule had run, the list answered 500.
    from django.utils import timezone
    from django_q.models import Schedule, Success

    now = timezone.now()
    Success.objects.create(
        id="a1b2c3",
        name="maintenance-tick",
        func="jobs.tasks.tick",
        started=now,
        stopped=now,
        success=True,
    )
    Schedule.objects.create(name="tick", func="jobs.tasks.tick", task="a1b2c3")

    response = admin_client.get("/admin/django_q/schedule/")

    assert response.status_code == 200
    assert "maintenance-tick" in response.content.decode()
