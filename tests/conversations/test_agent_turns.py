"""Conversations bound to an agent: its prompt, model and tools in a LangGraph tool loop,
driven through langchain-openai's real HTTP path against a loopback OpenAI-compatible
server that answers with tool_calls."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import AsyncClient
from langchain_core.tools import BaseTool, StructuredTool

from agents.models import Agent, AgentInteraction
from agents.services import agent_create, variant_create
from agents.tools.registry import ToolContext, ToolSpec, tool_register, tool_unregister
from conversations.models import Conversation, Message, ToolApproval

pytestmark = pytest.mark.django_db


def _call(name: str, args: dict[str, Any], call_id: str) -> dict[str, Any]:
    return {"id": call_id, "name": name, "args": args}


def _explode(context: ToolContext) -> BaseTool:
    def run(text: str) -> str:
        raise RuntimeError(f"boom on {text}")

    return StructuredTool.from_function(func=run, name="explode", description="Always fails.")


def _shout(context: ToolContext) -> BaseTool:
    def run(text: str) -> str:
        return text.upper()

    return StructuredTool.from_function(
        func=run, name="shout", description="Upper-cases text (needs approval)."
    )


def _rendezvous(context: ToolContext) -> BaseTool:
    # Built once per turn: both calls of a step meet here only if they run at the same time.
    barrier = asyncio.Barrier(2)

    async def run(name: str) -> str:
        await asyncio.wait_for(barrier.wait(), timeout=10)
        return f"{name} met the other call"

    return StructuredTool.from_function(
        coroutine=run, name="rendezvous", description="Waits for a second concurrent call."
    )


@pytest.fixture(autouse=True)
def test_tools() -> Iterator[None]:
    tool_register(ToolSpec(name="explode", description="Fails.", factory=_explode), replace=True)
    tool_register(
        ToolSpec(name="shout", description="Shouts.", factory=_shout, requires_approval=True),
        replace=True,
    )
    tool_register(
        ToolSpec(name="rendezvous", description="Meets.", factory=_rendezvous), replace=True
    )
    yield
    for name in ("explode", "shout", "rendezvous"):
        tool_unregister(name)


@pytest.fixture
def make_agent(user, openai_server):
    def make(**fields: Any) -> Agent:
        defaults: dict[str, Any] = {
            "name": "Maths",
            "slug": "maths",
            "system_prompt": "You are the maths agent.",
            "model": "openai:primary",
            "temperature": 0.2,
            "max_tokens": 300,
            "tools": ["calculator"],
        }
        return agent_create(actor=user, **{**defaults, **fields})

    return make


@pytest.fixture
def create_conversation(api_client):
    def create(agent: str, client=None, **fields: Any) -> dict[str, Any]:
        response = (client or api_client).post(
            "/api/v1/conversations/", {"agent": agent, **fields}, format="json"
        )
        assert response.status_code == 201, response.content
        return response.json()

    return create


def _send(client, conversation_id: str, content: str):
    return client.post(
        f"/api/v1/conversations/{conversation_id}/messages/", {"content": content}, format="json"
    )


def _tool_messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in request["messages"] if m["role"] == "tool"]


def test_a_bound_conversation_answers_with_the_agents_settings_and_one_tool_call(
    api_client, make_agent, create_conversation, openai_server
):
    agent = make_agent()
    conversation = create_conversation(agent.slug)
    assert conversation["agent"] == str(agent.pk) and conversation["workflow"] == "agent"
    openai_server.script = [
        {"tool_calls": [_call("calculator", {"expression": "6 * 7"}, "call-1")]},
        {"content": "It is 42."},
    ]

    response = _send(api_client, conversation["id"], "What is six times seven?")

    assert response.status_code == 201, response.content
    reply = response.json()["assistant_message"]
    assert reply["content"] == "It is 42." and reply["status"] == "complete"
    assert reply["model"] == "openai:primary"
    assert reply["agent"] == {"id": str(agent.pk), "slug": "maths", "name": "Maths"}
    assert reply["variant"] is None
    [call] = reply["tool_calls"]
    assert {k: call[k] for k in ("id", "name", "args", "result", "error", "approval")} == {
        "id": "call-1",
        "name": "calculator",
        "args": {"expression": "6 * 7"},
        "result": "42",
        "error": "",
        "approval": None,
    }
    assert isinstance(call["latency_ms"], int)
    first, second = openai_server.requests
    assert first["model"] == "primary" and first["temperature"] == 0.2
    assert first["messages"][0] == {"role": "system", "content": "You are the maths agent."}
    assert [t["function"]["name"] for t in first["tools"]] == ["calculator"]
    assert _tool_messages(second) == [{"role": "tool", "content": "42", "tool_call_id": "call-1"}]
    interaction = AgentInteraction.objects.get(message_id=reply["id"])
    assert interaction.agent == agent and interaction.source == "conversation"
    assert interaction.model_used == "openai:primary" and interaction.tool_call_count == 1
    assert interaction.tool_calls[0]["result"] == "42"
    assert (interaction.tokens_in, interaction.tokens_out) == (
        reply["tokens_in"],
        reply["tokens_out"],
    )


def test_two_tool_calls_of_one_step_run_concurrently(
    api_client, make_agent, create_conversation, openai_server
):
    conversation = create_conversation(make_agent(tools=["rendezvous"]).slug)
    openai_server.script = [
        {
            "tool_calls": [
                _call("rendezvous", {"name": "a"}, "call-a"),
                _call("rendezvous", {"name": "b"}, "call-b"),
            ]
        },
        {"content": "Both met."},
    ]

    reply = _send(api_client, conversation["id"], "Meet.").json()["assistant_message"]

    assert reply["content"] == "Both met."
    assert [(c["id"], c["result"], c["error"]) for c in reply["tool_calls"]] == [
        ("call-a", "a met the other call", ""),
        ("call-b", "b met the other call", ""),
    ]
    assert [m["tool_call_id"] for m in _tool_messages(openai_server.requests[1])] == [
        "call-a",
        "call-b",
    ]


def test_a_tools_exception_is_handed_to_the_model_as_its_result(
    api_client, make_agent, create_conversation, openai_server
):
    conversation = create_conversation(make_agent(tools=["explode"]).slug)
    openai_server.script = [
        {"tool_calls": [_call("explode", {"text": "x"}, "call-1")]},
        {"content": "The tool failed, sorry."},
    ]

    reply = _send(api_client, conversation["id"], "Try it.").json()["assistant_message"]

    assert reply["status"] == "complete" and reply["content"] == "The tool failed, sorry."
    [seen] = _tool_messages(openai_server.requests[1])
    assert seen["content"] == "Error: RuntimeError: boom on x"
    assert reply["tool_calls"][0]["error"] == "Error: RuntimeError: boom on x"


def test_the_tool_loop_stops_at_its_bound_with_a_clear_error(
    api_client, make_agent, create_conversation, openai_server, settings
):
    settings.CHATTER_AGENT_MAX_TOOL_ITERATIONS = 2
    conversation = create_conversation(make_agent().slug)
    openai_server.script = [
        {"tool_calls": [_call("calculator", {"expression": "1 + 1"}, f"call-{n}")]}
        for n in range(3)
    ]

    response = _send(api_client, conversation["id"], "Loop forever.")

    assert response.status_code == 422, response.content
    assert response.json()["error"]["code"] == "tool_iterations_exceeded"
    reply = Message.objects.get(conversation_id=conversation["id"], role="assistant")
    assert reply.status == "error" and "CHATTER_AGENT_MAX_TOOL_ITERATIONS" in reply.error
    assert len(openai_server.requests) == 3
    interaction = AgentInteraction.objects.get(message_id=reply.pk)
    assert "CHATTER_AGENT_MAX_TOOL_ITERATIONS" in interaction.error
    # Not wedged: the next message is answered.
    openai_server.script = [{"content": "Done."}]
    assert _send(api_client, conversation["id"], "Stop.").status_code == 201


def test_the_fallback_model_answers_when_the_primary_fails(
    api_client, make_agent, create_conversation, openai_server
):
    conversation = create_conversation(make_agent(fallback_model="openai:backup").slug)
    openai_server.failing_models = {"primary"}
    openai_server.script = [{"content": "Backup here."}]

    reply = _send(api_client, conversation["id"], "Hello?").json()["assistant_message"]

    assert reply["content"] == "Backup here." and reply["model"] == "openai:backup"
    assert [r["model"] for r in openai_server.requests] == ["primary", "backup"]
    assert AgentInteraction.objects.get(message_id=reply["id"]).model_used == "openai:backup"


def test_without_a_fallback_a_failing_primary_fails_the_reply(
    api_client, make_agent, create_conversation, openai_server
):
    conversation = create_conversation(make_agent().slug)
    openai_server.failing_models = {"primary"}

    response = _send(api_client, conversation["id"], "Hello?")

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "provider_error"


def test_knowledge_search_keeps_to_the_agents_scope_and_the_users_documents(
    api_client, other_client, make_agent, create_conversation, openai_server, settings
):
    settings.KNOWLEDGE_PROCESS_INLINE = True
    for client, name, text, topic in [
        (api_client, "bread.txt", "Knead the dough, let it rise, bake the loaf.", "cooking"),
        (api_client, "cake.txt", "Bake the sponge cake at 180 degrees.", "baking"),
        (other_client, "secret.txt", "Bake the secret family loaf.", "cooking"),
    ]:
        response = client.post(
            "/api/v1/documents/",
            {
                "file": SimpleUploadedFile(name, text.encode()),
                "metadata": json.dumps({"topic": topic}),
            },
            format="multipart",
        )
        assert response.json()["status"] == "processed", response.json()
    agent = make_agent(tools=["knowledge_search"], knowledge_filter={"topic": "cooking"})
    conversation = create_conversation(agent.slug)
    openai_server.script = [
        {"tool_calls": [_call("knowledge_search", {"query": "bake"}, "call-1")]},
        {"content": "Bake the loaf [1]."},
    ]

    reply = _send(api_client, conversation["id"], "How do I bake?").json()["assistant_message"]

    [seen] = _tool_messages(openai_server.requests[1])
    hits = json.loads(seen["content"])
    assert [hit["document"] for hit in hits] == ["bread"]
    assert reply["tool_calls"][0]["error"] == ""
    interaction = AgentInteraction.objects.get(message_id=reply["id"])
    assert interaction.confidence_method == "citations"
    assert interaction.confidence == pytest.approx(hits[0]["similarity"], abs=1e-4)


def test_an_operator_can_require_approval_for_a_built_in_tool(
    api_client, make_agent, create_conversation, openai_server, settings
):
    settings.CHATTER_TOOLS_REQUIRING_APPROVAL = frozenset({"calculator"})
    conversation = create_conversation(make_agent(tools=["calculator"]).slug)
    openai_server.script = [{"tool_calls": [_call("calculator", {"expression": "6*7"}, "c-1")]}]

    reply = _send(api_client, conversation["id"], "Six times seven?").json()["assistant_message"]

    assert reply["status"] == "awaiting_approval"
    assert reply["tool_calls"][0]["approval"] == "pending"
    assert len(openai_server.requests) == 1


def test_a_call_that_needs_approval_pauses_until_the_owner_approves(
    api_client, other_client, make_agent, create_conversation, openai_server
):
    conversation = create_conversation(make_agent(tools=["shout", "calculator"]).slug)
    openai_server.script = [
        {"tool_calls": [_call("shout", {"text": "hello"}, "call-1")]},
        {"content": "It shouted."},
    ]

    paused = _send(api_client, conversation["id"], "Shout hello.")

    assert paused.status_code == 201, paused.content
    reply = paused.json()["assistant_message"]
    assert reply["status"] == "awaiting_approval"
    assert reply["tool_calls"][0]["approval"] == "pending"
    assert reply["tool_calls"][0]["result"] is None
    listed = api_client.get(f"/api/v1/conversations/{conversation['id']}/approvals/").json()
    [approval] = listed["results"]
    assert {k: approval[k] for k in ("tool_name", "args", "status", "message")} == {
        "tool_name": "shout",
        "args": {"text": "hello"},
        "status": "pending",
        "message": reply["id"],
    }
    assert reply["metadata"]["approval_id"] == approval["id"]
    pending = api_client.get("/api/v1/approvals/?status=pending").json()["results"]
    assert [a["id"] for a in pending] == [approval["id"]]
    assert other_client.get("/api/v1/approvals/").json()["results"] == []
    assert len(openai_server.requests) == 1  # the tool has not run

    # The conversation is not wedged, but it says what it waits for.
    blocked = _send(api_client, conversation["id"], "Anything else?")
    assert blocked.status_code == 409
    assert blocked.json()["error"]["code"] == "approval_pending"
    assert blocked.json()["error"]["details"]["approval_id"] == approval["id"]

    decide = f"/api/v1/conversations/{conversation['id']}/approvals/{approval['id']}/"
    # Someone else's conversation: 404 for the id, and nothing is decided.
    stranger = other_client.post(decide, {"decision": "approve"}, format="json")
    assert stranger.status_code == 404
    assert ToolApproval.objects.get(pk=approval["id"]).status == "pending"

    decided = api_client.post(decide, {"decision": "approve"}, format="json")

    assert decided.status_code == 200, decided.content
    body = decided.json()
    assert body["approval"]["status"] == "approved"
    assert body["approval"]["decided_by"] == "alice"
    final = body["assistant_message"]
    assert final["id"] == reply["id"] and final["status"] == "complete"
    assert final["content"] == "It shouted."
    assert [(c["result"], c["approval"]) for c in final["tool_calls"]] == [("HELLO", "approved")]
    assert _tool_messages(openai_server.requests[1]) == [
        {"role": "tool", "content": "HELLO", "tool_call_id": "call-1"}
    ]
    again = api_client.post(decide, {"decision": "reject"}, format="json")
    assert again.status_code == 409 and again.json()["error"]["code"] == "approval_decided"
    interaction = AgentInteraction.objects.get(message_id=final["id"])
    assert interaction.tool_calls[0]["approval"] == "approved"
    # Usage counts both parts of the turn, once.
    conversation_row = Conversation.objects.get(pk=conversation["id"])
    assert conversation_row.tokens_out == final["tokens_out"] > 0
    openai_server.script = [{"content": "Next."}]
    assert _send(api_client, conversation["id"], "Anything else?").status_code == 201


def test_a_rejected_call_is_handed_to_the_model_as_the_tools_result(
    api_client, make_agent, create_conversation, openai_server
):
    conversation = create_conversation(make_agent(tools=["shout"]).slug)
    openai_server.script = [
        {"tool_calls": [_call("shout", {"text": "hello"}, "call-1")]},
        {"content": "Understood, I will not shout."},
    ]
    _send(api_client, conversation["id"], "Shout hello.")
    approval = ToolApproval.objects.get(conversation_id=conversation["id"])

    decided = api_client.post(
        f"/api/v1/conversations/{conversation['id']}/approvals/{approval.pk}/",
        {"decision": "reject", "reason": "too loud"},
        format="json",
    )

    assert decided.status_code == 200, decided.content
    final = decided.json()["assistant_message"]
    assert final["content"] == "Understood, I will not shout."
    assert _tool_messages(openai_server.requests[1]) == [
        {
            "role": "tool",
            "content": "The user rejected this tool call: too loud",
            "tool_call_id": "call-1",
        }
    ]
    assert final["tool_calls"][0]["approval"] == "rejected"


def test_decisions_refuse_unknown_fields_and_values(
    api_client, make_agent, create_conversation, openai_server
):
    conversation = create_conversation(make_agent(tools=["shout"]).slug)
    openai_server.script = [{"tool_calls": [_call("shout", {"text": "hi"}, "call-1")]}]
    _send(api_client, conversation["id"], "Shout.")
    approval = ToolApproval.objects.get(conversation_id=conversation["id"])
    url = f"/api/v1/conversations/{conversation['id']}/approvals/{approval.pk}/"

    assert api_client.post(url, {"decision": "maybe"}, format="json").status_code == 400
    assert (
        api_client.post(url, {"decision": "approve", "force": True}, format="json").status_code
        == 400
    )
    assert ToolApproval.objects.get(pk=approval.pk).status == "pending"


def test_branching_after_a_tool_using_turn_keeps_the_tool_exchange(
    api_client, make_agent, create_conversation, openai_server
):
    conversation = create_conversation(make_agent().slug)
    openai_server.script = [
        {"tool_calls": [_call("calculator", {"expression": "2 + 2"}, "call-1")]},
        {"content": "Four."},
    ]
    reply = _send(api_client, conversation["id"], "Two plus two?").json()["assistant_message"]

    branch = api_client.post(
        f"/api/v1/conversations/{conversation['id']}/branch/",
        {"message_id": reply["id"]},
        format="json",
    )

    assert branch.status_code == 201, branch.content
    assert branch.json()["agent"] == conversation["agent"]
    openai_server.script = [{"content": "Eight."}]
    answered = _send(api_client, branch.json()["id"], "And doubled?")
    assert answered.status_code == 201, answered.content
    history = openai_server.requests[-1]["messages"]
    assert [m["role"] for m in history] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    assert history[2]["tool_calls"][0]["id"] == "call-1"
    assert history[3] == {"role": "tool", "content": "4", "tool_call_id": "call-1"}


def test_a_variant_answers_with_its_own_prompt_and_is_recorded(
    api_client, make_agent, create_conversation, openai_server
):
    agent = make_agent(tools=[])
    variant = variant_create(
        agent=agent, name="terse", system_prompt="Be terse.", parameters={"temperature": 0.9}
    )
    conversation = create_conversation(agent.slug)

    reply = _send(api_client, conversation["id"], "Hi").json()["assistant_message"]

    request = openai_server.requests[-1]
    assert request["messages"][0] == {"role": "system", "content": "Be terse."}
    assert request["temperature"] == 0.9
    assert reply["variant"]["id"] == str(variant.pk) and reply["variant"]["name"] == "terse"
    interaction = AgentInteraction.objects.get(message_id=reply["id"])
    assert interaction.variant_id == variant.pk
    assert interaction.choice_id == reply["variant"]["choice_id"]


def test_someone_elses_private_agent_cannot_be_bound(
    api_client, other_user, make_agent, openai_server
):
    theirs = agent_create(actor=other_user, name="Theirs", slug="theirs", model="openai:x")

    for ref in (str(theirs.pk), "theirs", "no-such-agent"):
        response = api_client.post("/api/v1/conversations/", {"agent": ref}, format="json")
        assert response.status_code == 404, response.content
        assert response.json()["error"]["code"] == "unknown_agent"
    assert not Conversation.objects.exists()


def test_staff_bind_any_active_agent_by_id(staff_client, staff_user, other_user, openai_server):
    """The operator console's "talk to any agent": staff name another user's private
    agent by its id (not by slug, which stays the caller's own or a shared one)."""
    theirs = agent_create(actor=other_user, name="Theirs", slug="theirs", model="openai:x")

    by_slug = staff_client.post("/api/v1/conversations/", {"agent": "theirs"}, format="json")
    by_id = staff_client.post("/api/v1/conversations/", {"agent": str(theirs.pk)}, format="json")

    assert by_slug.status_code == 404
    assert by_id.status_code == 201, by_id.json()
    conversation = Conversation.objects.get(pk=by_id.json()["id"])
    assert conversation.owner == staff_user and conversation.agent_id == theirs.pk


def test_auto_routes_the_first_message_and_binds_the_conversation(
    api_client, user, create_conversation, openai_server
):
    cook = agent_create(
        actor=user,
        name="Cook",
        slug="cook",
        model="openai:cook-model",
        tools=[],
        capabilities=[{"name": "recipes", "description": "Cooking recipes, baking bread."}],
    )
    agent_create(
        actor=user,
        name="Tax",
        slug="tax",
        model="openai:tax-model",
        tools=[],
        capabilities=[{"name": "taxes", "description": "Income tax returns and deductions."}],
    )
    conversation = create_conversation("auto")
    assert conversation["agent"] == "auto" and conversation["workflow"] == "agent"

    reply = _send(api_client, conversation["id"], "How long should bread dough rise?").json()[
        "assistant_message"
    ]

    assert reply["agent"]["slug"] == "cook"
    assert openai_server.requests[-1]["model"] == "cook-model"
    route = reply["metadata"]["route"]
    assert [c["agent"]["slug"] for c in route] == ["cook", "tax"]
    assert route[0]["score"] > route[1]["score"]
    bound = api_client.get(f"/api/v1/conversations/{conversation['id']}/").json()
    assert bound["agent"] == str(cook.pk)
    assert Conversation.objects.get(pk=conversation["id"]).metadata["route"] == route


async def _stream(conversation_id: str, raw_key: str, content: str) -> list[tuple[str, Any]]:
    client = AsyncClient()
    response = await client.post(
        f"/api/v1/conversations/{conversation_id}/messages/stream/",
        {"content": content},
        content_type="application/json",
        headers={"Authorization": f"Bearer {raw_key}"},
    )
    assert response.status_code == 200
    body = b"".join([chunk async for chunk in response.streaming_content]).decode()
    events = []
    for block in body.strip().split("\n\n"):
        name, data = block.split("\n", 1)
        events.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return events


@pytest.mark.django_db(transaction=True)
def test_the_stream_shows_tool_calls_and_their_results(
    api_client, make_agent, create_conversation, openai_server
):
    conversation = create_conversation(make_agent().slug)
    openai_server.script = [
        {"tool_calls": [_call("calculator", {"expression": "3 * 3"}, "call-1")]},
        {"content": "Nine it is."},
    ]

    events = asyncio.run(_stream(conversation["id"], api_client.raw_key, "Three squared?"))

    names = [name for name, _ in events]
    assert names[0] == "start" and names[-1] == "done"
    assert names.index("tool_call") < names.index("tool_result") < names.index("delta")
    data = dict(events)
    assert data["tool_call"] == {
        "id": "call-1",
        "name": "calculator",
        "args": {"expression": "3 * 3"},
    }
    assert data["tool_result"]["result"] == "9" and data["tool_result"]["error"] == ""
    assert "".join(d["content"] for n, d in events if n == "delta").strip() == "Nine it is."
    assert data["done"]["status"] == "complete"


@pytest.mark.django_db(transaction=True)
def test_the_stream_ends_with_the_approval_it_waits_for(
    api_client, make_agent, create_conversation, openai_server
):
    conversation = create_conversation(make_agent(tools=["shout"]).slug)
    openai_server.script = [{"tool_calls": [_call("shout", {"text": "hey"}, "call-1")]}]

    events = asyncio.run(_stream(conversation["id"], api_client.raw_key, "Shout."))

    names = [name for name, _ in events]
    assert names == ["start", "tool_call", "approval_required", "done"]
    data = dict(events)
    approval = ToolApproval.objects.get(conversation_id=conversation["id"])
    assert data["approval_required"] == {
        "approval_id": str(approval.pk),
        "tool_call_id": "call-1",
        "name": "shout",
        "args": {"text": "hey"},
    }
    assert data["done"]["status"] == "awaiting_approval"


@pytest.fixture
def admin_client(make_user):
    from django.test import Client

    make_user("root", staff=True, password="pw")
    client = Client()
    client.login(username="root", password="pw")
    return client


def test_the_admin_shows_who_answered_and_the_tool_trace_and_decides_approvals(
    admin_client, api_client, make_agent, create_conversation, openai_server
):
    conversation = create_conversation(make_agent(tools=["shout"]).slug)
    openai_server.script = [
        {"tool_calls": [_call("shout", {"text": "admin"}, "call-1")]},
        {"content": "Shouted for the operator."},
    ]
    reply = _send(api_client, conversation["id"], "Shout.").json()["assistant_message"]
    approval = ToolApproval.objects.get(conversation_id=conversation["id"])

    listing = admin_client.get("/admin/conversations/toolapproval/?decision=pending")
    assert listing.status_code == 200 and "shout" in listing.content.decode()
    acted = admin_client.post(
        "/admin/conversations/toolapproval/",
        {"action": "approve", "_selected_action": [str(approval.pk)]},
        follow=True,
    )

    assert "Approved 1 call(s)." in acted.content.decode()
    approval.refresh_from_db()
    assert approval.status == "approved" and approval.decided_by.username == "root"
    message = Message.objects.get(pk=reply["id"])
    assert message.status == "complete" and message.content == "Shouted for the operator."
    page = admin_client.get(f"/admin/conversations/message/{message.pk}/change/").content.decode()
    assert "maths" in page  # the agent that answered
    assert "<td>shout</td>" in page and "ADMIN" in page and "approved" in page
    conversation_page = admin_client.get(
        f"/admin/conversations/conversation/{conversation['id']}/change/"
    ).content.decode()
    assert "<td>shout</td>" in conversation_page


def test_an_agent_is_bound_and_unbound_by_patch(api_client, make_agent, openai_server):
    agent = make_agent()
    plain = api_client.post("/api/v1/conversations/", {"workflow": "basic"}, format="json").json()

    bound = api_client.patch(
        f"/api/v1/conversations/{plain['id']}/", {"agent": str(agent.pk)}, format="json"
    )
    assert bound.status_code == 200, bound.content
    assert (bound.json()["agent"], bound.json()["workflow"]) == (str(agent.pk), "agent")
    unbound = api_client.patch(
        f"/api/v1/conversations/{plain['id']}/", {"agent": None}, format="json"
    )
    assert (unbound.json()["agent"], unbound.json()["workflow"]) == (None, "rag")


def test_an_inactive_agent_answers_no_messages(
    api_client, make_agent, create_conversation, openai_server
):
    agent = make_agent()
    conversation = create_conversation(agent.slug)
    Agent.objects.filter(pk=agent.pk).update(status="inactive")

    response = _send(api_client, conversation["id"], "Hello?")

    assert response.status_code == 409 and response.json()["error"]["code"] == "agent_inactive"
    assert openai_server.requests == []
    reply = Message.objects.get(conversation_id=conversation["id"], role="assistant")
    assert reply.status == "error"
    agent.status = "active"
    agent.save()
    openai_server.script = [{"content": "Back."}]
    assert _send(api_client, conversation["id"], "Hello?").status_code == 201
