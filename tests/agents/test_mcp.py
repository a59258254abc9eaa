"""MCP servers as a tool source: a real MCP server (tests/agents/mcp_server.py) over stdio."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync

from agents.mcp import mcp_server_refresh
from agents.models import Agent, MCPServer
from agents.tools import tool_get, tool_list, tools_for

pytestmark = pytest.mark.django_db(transaction=True)

SERVER_SCRIPT = str(Path(__file__).with_name("mcp_server.py"))


@pytest.fixture
def server() -> MCPServer:
    return MCPServer.objects.create(
        name="testing", transport="stdio", command=sys.executable, args=[SERVER_SCRIPT]
    )


def test_refreshing_lists_the_servers_tools_and_marks_it_healthy(server):
    server = mcp_server_refresh(server=server)

    assert server.healthy is True, server.last_error
    assert server.last_error == ""
    assert sorted(tool["name"] for tool in server.tools) == ["add", "shout"]
    assert server.checked_at is not None
    names = [spec.name for spec in tool_list()]
    assert "mcp__testing__add" in names and "mcp__testing__shout" in names
    assert tool_get("mcp__testing__add").source == "mcp:testing"


def test_an_agent_calls_an_mcp_tool(server, user, api_client, create_agent):
    mcp_server_refresh(server=server)
    response = create_agent(api_client, tools=["mcp__testing__add", "calculator"])
    assert response.status_code == 201, response.json()
    agent = Agent.objects.get()

    add, _calculator = tools_for(user=user, agent=agent)
    result = async_to_sync(add.ainvoke)({"a": 2, "b": 40})

    assert add.name == "mcp__testing__add"
    assert "42" in str(result)


def test_a_failing_server_is_unhealthy_not_fatal(user, api_client, create_agent):
    broken = MCPServer.objects.create(
        name="broken",
        transport="stdio",
        command=sys.executable,
        args=["-c", "import sys; sys.exit(3)"],
    )
    unreachable = MCPServer.objects.create(
        name="gone", transport="streamable_http", url="http://127.0.0.1:9/mcp"
    )

    for server in (broken, unreachable):
        server = mcp_server_refresh(server=server, timeout=20)
        assert server.healthy is False
        assert server.last_error
        assert server.tools == []
    assert not [spec for spec in tool_list() if spec.source.startswith("mcp:")]
    refused = create_agent(api_client, tools=["mcp__broken__add"])
    assert refused.status_code == 400
    assert refused.json()["error"]["details"]["tools"]


def test_a_disabled_server_offers_no_tools(server):
    mcp_server_refresh(server=server)
    MCPServer.objects.filter(pk=server.pk).update(enabled=False)

    assert not [spec for spec in tool_list() if spec.source == "mcp:testing"]


def test_an_operator_registers_a_server_in_the_admin(make_user):
    from django.test import Client

    make_user("root", staff=True, password="pw-for-tests")
    client = Client()
    assert client.login(username="root", password="pw-for-tests")

    response = client.post(
        "/admin/agents/mcpserver/add/",
        {
            "name": "testing",
            "transport": "stdio",
            "command": sys.executable,
            "args": f'["{SERVER_SCRIPT}"]',
            "enabled": "on",
        },
    )
    missing = client.post(
        "/admin/agents/mcpserver/add/", {"name": "nocmd", "transport": "stdio", "args": "[]"}
    )

    assert response.status_code == 302
    server = MCPServer.objects.get()
    assert server.healthy is True and len(server.tools) == 2
    page = client.get(f"/admin/agents/mcpserver/{server.pk}/change/").content.decode()
    assert "mcp__testing__add" in page
    assert missing.status_code == 200
    assert "command" in missing.context["adminform"].form.errors
    listing = client.get("/admin/agents/mcpserver/")
    assert listing.status_code == 200


def test_an_operator_marks_a_servers_tool_as_needing_approval(server, settings):
    server.approval_tools = ["shout"]
    server.save()
    mcp_server_refresh(server=server)

    assert tool_get("mcp__testing__shout").requires_approval is True
    assert tool_get("mcp__testing__add").requires_approval is False
    listed = {spec.name: spec.requires_approval for spec in tool_list()}
    assert listed["mcp__testing__shout"] is True and listed["mcp__testing__add"] is False


def test_the_approval_setting_marks_any_registered_tool(settings):
    settings.CHATTER_TOOLS_REQUIRING_APPROVAL = frozenset({"http_get"})

    assert tool_get("http_get").requires_approval is True
    assert tool_get("calculator").requires_approval is False


def test_the_admin_refuses_approval_for_a_tool_the_server_does_not_have(server, make_user):
    from django.test import Client

    mcp_server_refresh(server=server)
    make_user("root", staff=True, password="pw-for-tests")
    client = Client()
    assert client.login(username="root", password="pw-for-tests")
    form = {
        "name": "testing",
        "transport": "stdio",
        "command": sys.executable,
        "args": f'["{SERVER_SCRIPT}"]',
        "enabled": "on",
    }
    url = f"/admin/agents/mcpserver/{server.pk}/change/"

    refused = client.post(url, {**form, "approval_tools": '["shout", "rm_rf"]'})
    accepted = client.post(url, {**form, "approval_tools": '["shout"]'})

    assert refused.status_code == 200
    assert "rm_rf" in str(refused.context["adminform"].form.errors["approval_tools"])
    assert accepted.status_code == 302
    server.refresh_from_db()
    assert server.approval_tools == ["shout"]
    page = client.get(url).content.decode()
    assert "mcp__testing__shout</code> (needs approval)" in page
