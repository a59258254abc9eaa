"""The operator chat page: start a conversation with any agent, read its citations and tool
calls, stream through the API's endpoint with the admin session (staff, CSRF-checked)."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from django.test import AsyncClient, Client

from agents.models import Agent
from conversations.models import Conversation, Message

CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@pytest.fixture
def operator(make_user):
    return make_user("root", staff=True, password="pw")


@pytest.mark.django_db
def test_an_operator_starts_a_chat_with_any_agent_and_reads_citations_and_tool_calls(
    operator, user
):
    shared = Agent.objects.create(owner=None, name="Support<b>", slug="support")
    private = Agent.objects.create(owner=user, name="Alice's own", slug="alices")
    client = Client()
    client.force_login(operator)

    page = client.get("/admin/console/chat/")
    assert page.status_code == 200
    assert "Support&lt;b&gt; (support) · shared" in page.content.decode()
    # Any agent: a user's private one too (its owner named), as Open WebUI's admins can.
    assert "Alice&#x27;s own (alices) · alice's" in page.content.decode()
    with_private = client.post("/admin/console/chat/", {"agent": str(private.pk)})
    assert with_private.status_code == 302
    assert Conversation.objects.get(owner=operator, agent=private).workflow == "agent"
    created = client.post("/admin/console/chat/", {"agent": str(shared.pk)})

    conversation = Conversation.objects.get(owner=operator, agent=shared)
    assert created.status_code == 302
    assert created["Location"] == f"/admin/console/chat/{conversation.pk}/"
    assert conversation.agent_id == shared.pk
    doc_id = "5d4f0d8e-8f5e-4a0e-9a57-3f0c1f7e0a11"
    Message.objects.bulk_create(
        [
            Message(conversation=conversation, position=0, role="user", content="6*7?"),
            Message(
                conversation=conversation,
                position=1,
                role="assistant",
                content="42 [1]",
                tool_calls=[
                    {
                        "id": "c1",
                        "name": "calculator",
                        "args": {"expression": "6*7"},
                        "result": "42",
                    }
                ],
                metadata={"sources": [{"n": 1, "document_id": doc_id, "title": "Maths<i>"}]},
            ),
        ]
    )
    html = client.get(created["Location"]).content.decode()

    assert "tool <strong>calculator</strong>" in html and "→ 42" in html
    assert f'href="/admin/knowledge/document/{doc_id}/change/">Maths&lt;i&gt;</a>' in html
    assert html.count('class="chat-branch button"') == 2
    assert f'data-stream-url="/api/v1/conversations/{conversation.pk}/messages/stream/"' in html
    assert '<script src="/static/console/chat.js" defer>' in html
    # Not staff: the admin's login, not the page.
    client.force_login(user)
    assert client.get("/admin/console/chat/").status_code == 302
    script = client.get("/static/console/chat.js")  # served by the app (whitenoise)
    assert script.status_code == 200
    script.close()


async def _events(response) -> list[str]:
    body = b"".join([chunk async for chunk in response.streaming_content]).decode()
    return [block.split("\n", 1)[0].removeprefix("event: ") for block in body.strip().split("\n\n")]


@pytest.mark.django_db(transaction=True)
def test_the_stream_takes_a_staff_session_with_its_csrf_token(operator, user):
    staff_conversation = Conversation.objects.create(owner=operator, title="ops")
    user_conversation = Conversation.objects.create(owner=user, title="mine")

    async def scenario() -> None:
        staff = AsyncClient(enforce_csrf_checks=True)
        await staff.aforce_login(operator)
        page = await staff.get(f"/admin/console/chat/{staff_conversation.pk}/")
        token = CSRF.search(page.content.decode()).group(1)
        url = f"/api/v1/conversations/{staff_conversation.pk}/messages/stream/"
        body = json.dumps({"content": "Hello?"})

        no_csrf = await staff.post(url, body, content_type="application/json")
        assert no_csrf.status_code == 403
        streamed = await staff.post(
            url, body, content_type="application/json", headers={"X-CSRFToken": token}
        )
        assert streamed.status_code == 200
        assert streamed["Content-Type"] == "text/event-stream"
        events = await _events(streamed)
        assert events[0] == "start" and "delta" in events and events[-1] == "done"

        # A user's session is not enough (clients use API keys), with CSRF or not.
        plain = AsyncClient(enforce_csrf_checks=True)
        await plain.aforce_login(user)
        await plain.get("/admin/login/")  # sets the CSRF cookie
        refused = await plain.post(
            f"/api/v1/conversations/{user_conversation.pk}/messages/stream/",
            body,
            content_type="application/json",
            headers={"X-CSRFToken": plain.cookies["csrftoken"].value},
        )
        assert refused.status_code == 401

        # No session and no key: anonymous, a 401 (a CSRF check is for sessions only).
        anonymous = await AsyncClient(enforce_csrf_checks=True).post(
            url, body, content_type="application/json"
        )
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["code"] == "not_authenticated"

    asyncio.run(scenario())

    replies = list(
        Message.objects.filter(conversation=staff_conversation, role="assistant").values_list(
            "status", flat=True
        )
    )
    assert replies == ["complete"]
    assert not Message.objects.filter(conversation=user_conversation).exists()
