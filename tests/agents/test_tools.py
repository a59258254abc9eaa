"""The built-in tools, called as LangChain tools, against the real database and servers."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from agents.models import Agent
from agents.tools import tool_get, tools_for
from agents.tools.calculator import CalculatorError, calculate
from agents.tools.registry import ToolContext, ToolSpec, tool_register, tool_unregister
from core.errors import ApplicationError


def _tool(name: str, user=None, agent=None):
    return tool_get(name).factory(ToolContext(user=user, agent=agent))


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("2 ** 10", 1024),
        ("7 // 2 + 7 % 2", 4),
        ("-3 + +5", 2),
        ("10 / 4", 2.5),
        ("sqrt(16) + abs(-2)", 6.0),
        ("max(1, 5, 3) - min(4, 2)", 3),
        ("round(pi, 2)", 3.14),
        ("1e3 * 2", 2000.0),
        ("10 ** 300 // 10 ** 299", 10),
    ],
)
def test_the_calculator_does_arithmetic(expression, value):
    assert calculate(expression) == value


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('id')",
        "().__class__.__bases__[0].__subclasses__()",
        "open('/etc/passwd').read()",
        "x",
        "lambda: 1",
        "[1, 2]",
        "'a' * 3",
        "True + 1",
        "1j * 2",
        "2 ** 100000",
        "9 ** 9 ** 9",
        "10 ** 2000",
        "(10 ** 1000) * (10 ** 1000) * (10 ** 1000)",
        "1e308 * 10",
        "1 / 0",
        "sqrt(-1)",
        "1 +",
        "abs(x=1)",
        "1" * 501,
        "",
        "1 if 2 else 3",
        "1 < 2",
    ],
)
def test_the_calculator_refuses_everything_else(expression):
    with pytest.raises(CalculatorError):
        calculate(expression)


def test_the_calculator_tool_hands_errors_back_as_its_result():
    tool = _tool("calculator")

    assert tool.invoke({"expression": "6 * 7"}) == "42"
    assert "Not supported" in tool.invoke({"expression": "__import__('os')"})


def test_current_time_answers_in_the_asked_zone():
    tool = _tool("current_time")

    utc = dt.datetime.fromisoformat(tool.invoke({}))
    paris = dt.datetime.fromisoformat(tool.invoke({"timezone": "Europe/Paris"}))

    assert utc.utcoffset() == dt.timedelta(0)
    assert abs((paris - utc).total_seconds()) < 60
    assert "Unknown time zone" in tool.invoke({"timezone": "Mars/Olympus"})


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
            return
        body = b"<h1>hello agent</h1>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def page_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_http_get_refuses_inside_addresses(page_server, settings):
    settings.CHATTER_OUTBOUND_ALLOWLIST = []
    tool = _tool("http_get")

    for url in (
        f"http://127.0.0.1:{page_server}/",
        f"http://localhost:{page_server}/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]/",
        "http://2130706433/",
        "file:///etc/passwd",
    ):
        result = tool.invoke({"url": url})
        assert "hello agent" not in result
        assert "non-public" in result or "Only http" in result, (url, result)


def test_http_get_fetches_an_allowlisted_server_and_rechecks_redirects(page_server, settings):
    settings.CHATTER_OUTBOUND_ALLOWLIST = [f"127.0.0.1:{page_server}"]
    tool = _tool("http_get")

    result = json.loads(tool.invoke({"url": f"http://127.0.0.1:{page_server}/page"}))
    refused = tool.invoke({"url": f"http://127.0.0.1:{page_server}/redirect"})

    assert result == {
        "url": f"http://127.0.0.1:{page_server}/page",
        "status": 200,
        "content_type": "text/html",
        "truncated": False,
        "body": "<h1>hello agent</h1>",
    }
    assert "169.254.169.254" in refused and "non-public" in refused


def test_a_plugin_tool_registers_and_agents_get_it(user, db):
    from langchain_core.tools import StructuredTool

    def factory(context: ToolContext):
        return StructuredTool.from_function(
            func=lambda: f"hello {context.user.username}", name="greet", description="Greets."
        )

    tool_register(ToolSpec(name="greet", description="Greets.", factory=factory, source="test"))
    try:
        with pytest.raises(ValueError):
            tool_register(ToolSpec(name="greet", description="again", factory=factory))
        agent = Agent.objects.create(owner=user, name="a", slug="a", tools=["greet", "calculator"])
        tools = tools_for(user=user, agent=agent)
        assert [tool.name for tool in tools] == ["greet", "calculator"]
        assert tools[0].invoke({}) == "hello alice"
    finally:
        tool_unregister("greet")
    with pytest.raises(ApplicationError):
        tool_get("greet")


@pytest.mark.django_db
def test_knowledge_search_reads_the_users_documents_within_the_agents_scope(
    api_client, other_client, user, settings, embedder_loaded
):
    settings.KNOWLEDGE_PROCESS_INLINE = True
    for client, name, text, metadata in [
        (
            api_client,
            "bread.txt",
            "Knead the dough, let it rise, bake the loaf.",
            {"topic": "cooking"},
        ),
        (api_client, "cake.txt", "Bake the sponge cake at 180 degrees.", {"topic": "baking"}),
        (other_client, "secret.txt", "Bake the secret family loaf.", {"topic": "cooking"}),
    ]:
        response = client.post(
            "/api/v1/documents/",
            {"file": SimpleUploadedFile(name, text.encode()), "metadata": json.dumps(metadata)},
            format="multipart",
        )
        assert response.json()["status"] == "processed", response.json()
    agent = Agent.objects.create(
        owner=user, name="Cook", slug="cook", knowledge_filter={"topic": "cooking"}
    )
    unscoped = Agent.objects.create(owner=user, name="All", slug="all")

    scoped_hits = json.loads(_tool("knowledge_search", user, agent).invoke({"query": "bake"}))
    all_hits = json.loads(_tool("knowledge_search", user, unscoped).invoke({"query": "bake"}))

    assert [hit["document"] for hit in scoped_hits] == ["bread"]
    assert sorted(hit["document"] for hit in all_hits) == ["bread", "cake"]
    assert all(hit["similarity"] is not None and hit["content"] for hit in all_hits)
