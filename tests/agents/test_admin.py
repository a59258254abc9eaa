from __future__ import annotations

import json

import pytest
from django.test import Client

from agents.models import Agent, AgentPromptVersion, AgentVariant
from agents.services import variant_choose, variant_create, variant_feedback_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(make_user):
    return make_user("root", staff=True, password="pw-for-tests")


@pytest.fixture
def admin_client(root) -> Client:
    client = Client()
    assert client.login(username="root", password="pw-for-tests")
    return client


def _inlines(initial: dict[str, int] | None = None) -> dict[str, str]:
    data = {}
    for prefix in ("variants", "prompt_versions"):
        count = str((initial or {}).get(prefix, 0))
        data.update(
            {
                f"{prefix}-TOTAL_FORMS": count,
                f"{prefix}-INITIAL_FORMS": count,
                f"{prefix}-MIN_NUM_FORMS": "0",
                f"{prefix}-MAX_NUM_FORMS": "1000",
            }
        )
    return data


def _form(**overrides: str) -> dict[str, str]:
    data = {
        "shared": "on",
        "name": "Support",
        "slug": "support",
        "type": "conversational",
        "status": "active",
        "description": "Answers support questions.",
        "system_prompt": "Be helpful.",
        "model": "local",
        "temperature": "",
        "max_tokens": "",
        "fallback_model": "",
        "capabilities": json.dumps([{"name": "support", "description": "Product help."}]),
        "tools": json.dumps(["calculator"]),
        "knowledge_filter": "{}",
        **_inlines(),
    }
    data.update(overrides)
    return data


def test_an_operator_adds_a_shared_agent_through_the_service(admin_client, root):
    response = admin_client.post("/admin/agents/agent/add/", _form())

    assert response.status_code == 302, response.context["adminform"].form.errors
    agent = Agent.objects.get()
    assert agent.owner is None and agent.created_by == root
    assert list(agent.prompt_versions.values_list("version", "system_prompt", "author")) == [
        (1, "Be helpful.", root.pk)
    ]


def test_the_admin_form_refuses_what_the_api_refuses(admin_client):
    response = admin_client.post(
        "/admin/agents/agent/add/",
        _form(tools=json.dumps(["nope"]), knowledge_filter=json.dumps({"a": {"$bad": 1}})),
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert set(errors) == {"tools", "knowledge_filter"}
    assert not Agent.objects.exists()


def test_a_prompt_edit_in_the_admin_is_a_new_version_shown_read_only(admin_client, root, user):
    admin_client.post("/admin/agents/agent/add/", _form())
    agent = Agent.objects.get()

    response = admin_client.post(
        f"/admin/agents/agent/{agent.pk}/change/",
        {**_form(system_prompt="Be brief."), **_inlines({"prompt_versions": 0})},
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert list(agent.prompt_versions.values_list("version", flat=True)) == [2, 1]
    page = admin_client.get(f"/admin/agents/agent/{agent.pk}/change/")
    html = page.content.decode()
    assert "Be brief." in html and "Be helpful." in html
    assert "knowledge_search" in html and "http_get" in html  # the registry is listed
    assert AgentPromptVersion.objects.count() == 2


def test_variants_show_their_posteriors_and_choices_are_read_only(admin_client, user):
    agent = Agent.objects.create(owner=user, name="Helper", slug="helper")
    variant = variant_create(agent=agent, name="terse")
    variant_feedback_record(variant=variant, reward=1.0)
    choice = variant_choose(agent=agent, user=user)

    variants = admin_client.get("/admin/agents/agentvariant/")
    choices = admin_client.get("/admin/agents/agentvariantchoice/")
    agents = admin_client.get("/admin/agents/agent/")

    assert variants.status_code == 200
    assert "0.667" in variants.content.decode()  # Beta(2, 1)
    assert choices.status_code == 200
    assert str(choice.sample)[:5] in choices.content.decode()
    assert admin_client.get("/admin/agents/agentvariantchoice/add/").status_code == 403
    assert agents.status_code == 200
    assert agents.context["cl"].result_list[0]._variants == 1


def test_an_operator_adds_a_variant_through_the_service(admin_client, user):
    agent = Agent.objects.create(owner=user, name="Helper", slug="helper")

    response = admin_client.post(
        "/admin/agents/agentvariant/add/",
        {
            "agent": str(agent.pk),
            "name": "warm",
            "system_prompt": "Be warm.",
            "parameters": json.dumps({"temperature": 0.9}),
            "active": "on",
        },
    )
    refused = admin_client.post(
        "/admin/agents/agentvariant/add/",
        {"agent": str(agent.pk), "name": "hot", "parameters": json.dumps({"temperature": 9})},
    )

    assert response.status_code == 302
    variant = AgentVariant.objects.get()
    assert (variant.name, variant.alpha, variant.beta, variant.parameters) == (
        "warm",
        1.0,
        1.0,
        {"temperature": 0.9},
    )
    assert refused.status_code == 200
    assert "parameters" in refused.context["adminform"].form.errors
