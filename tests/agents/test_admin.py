from __future__ import annotations

import json

import pytest
from django.test import Client

from agents.models import Agent, AgentPromptVersion, AgentVariant
from agents.services import (
    interaction_record,
    variant_choose,
    variant_create,
    variant_feedback_record,
)

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


def _interaction(agent, *, latency, reward=None, calls=0, error="", variant=None, days_ago=0):
    from django.utils import timezone

    from agents.models import AgentInteraction, AgentVariantChoice

    choice = None
    if variant is not None:
        choice = AgentVariantChoice.objects.create(
            agent=agent, variant=variant, sample=0.5, samples={}
        )
    tool_calls = [
        {"id": f"call_{i}", "name": "calculator", "args": {"expression": "6*7"}, "result": "42"}
        for i in range(calls)
    ]
    row = interaction_record(
        agent=agent,
        source="conversation",
        choice=choice,
        model_used="local",
        latency_ms=latency,
        tool_calls=tool_calls,
        error=error,
    )
    moment = timezone.now() - timezone.timedelta(days=days_ago)
    AgentInteraction.objects.filter(pk=row.pk).update(
        created_at=moment,
        feedback_reward=reward,
        feedback_at=moment if reward is not None else None,
    )
    return row


def test_the_agent_list_shows_metric_columns_in_one_query(admin_client, user):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    agent = Agent.objects.create(owner=user, name="Helper", slug="helper")
    _interaction(agent, latency=100, reward=1.0, calls=2)
    _interaction(agent, latency=300, reward=0.5)
    _interaction(agent, latency=200)
    Agent.objects.create(owner=user, name="Idle", slug="idle")

    with CaptureQueriesContext(connection) as two_agents:
        response = admin_client.get("/admin/agents/agent/")
    for n in range(5):
        Agent.objects.create(owner=user, name=f"More {n}", slug=f"more-{n}")
    with CaptureQueriesContext(connection) as seven_agents:
        admin_client.get("/admin/agents/agent/")

    assert response.status_code == 200
    rows = {a.slug: a for a in response.context["cl"].result_list}
    helper, idle = rows["helper"], rows["idle"]
    assert (helper._replies, helper._latency_mean, helper._feedback_mean) == (3, 200, 0.75)
    assert abs(helper._tool_call_rate - 1 / 3) < 1e-9
    assert (idle._replies, idle._latency_mean, idle._feedback_mean) == (0, None, None)
    html = response.content.decode()
    assert "200 ms" in html and "0.75" in html and "33%" in html
    assert len(seven_agents.captured_queries) == len(two_agents.captured_queries)
    assert admin_client.get("/admin/agents/agent/?o=8").status_code == 200  # sortable


def test_the_agent_page_plots_feedback_over_time_per_variant(admin_client, user):
    agent = Agent.objects.create(owner=user, name="Helper", slug="helper")
    warm = variant_create(agent=agent, name="warm<b>")
    _interaction(agent, latency=100, reward=1.0, variant=warm, days_ago=2)
    _interaction(agent, latency=100, reward=0.0, variant=warm, days_ago=2)
    _interaction(agent, latency=100, reward=1.0, variant=warm)
    _interaction(agent, latency=100, reward=0.25)
    _interaction(agent, latency=100, reward=1.0, days_ago=45)  # outside the plot

    page = admin_client.get(f"/admin/agents/agent/{agent.pk}/change/")

    html = page.content.decode()
    assert page.status_code == 200
    start = html.index('<svg class="agent-feedback-plot"')
    svg = html[start : html.index("</svg>", start)]
    assert svg.count("<polyline") == 2  # warm<b> and the replies from no variant
    assert "warm&lt;b&gt;: mean 0.500 over 2 ratings" in svg  # escaped, exact figures
    assert "warm&lt;b&gt;: 0.67 (3)" in svg  # legend: mean over the period and count
    assert "(no variant): 0.25 (1)" in svg
    assert "<b>" not in svg
    assert "cdn" not in html.lower()
    assert "5 ratings" not in html and "(4 ratings)" in html  # the 30-day metrics table


def test_interactions_are_read_only_with_a_readable_trace_and_filters(admin_client, user):
    from agents.models import AgentInteraction

    agent = Agent.objects.create(owner=user, name="Helper", slug="helper")
    traced = _interaction(agent, latency=100, calls=2)
    _interaction(agent, latency=100, error="the model timed out")

    page = admin_client.get(f"/admin/agents/agentinteraction/{traced.pk}/change/")
    errors = admin_client.get("/admin/agents/agentinteraction/?has_error=yes")
    openai = admin_client.get("/admin/agents/agentinteraction/?source=openai")

    html = page.content.decode()
    assert page.status_code == 200
    assert "<code>calculator</code>" in html and "call_1" in html
    assert "&quot;expression&quot;: &quot;6*7&quot;" in html  # arguments as indented JSON
    assert [i.error for i in errors.context["cl"].result_list] == ["the model timed out"]
    assert list(openai.context["cl"].result_list) == []
    assert admin_client.get("/admin/agents/agentinteraction/add/").status_code == 403
    changed = admin_client.post(
        f"/admin/agents/agentinteraction/{traced.pk}/change/", {"latency_ms": "1"}
    )
    assert changed.status_code == 403
    assert AgentInteraction.objects.get(pk=traced.pk).latency_ms == 100
