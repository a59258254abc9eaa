from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import bench.providers  # noqa: F401  (registers the instant: and paced: test models)
from conversations.models import Conversation


class FakeOpenAI:
    """An OpenAI-compatible chat completions server on loopback, so langchain-openai's real
    HTTP path (JSON and SSE) runs in the tests. `fail_with` makes it answer an error status;
    `hang` makes it never answer (the client's timeout fires). `script` holds the next
    answers, one per request, each `{"content": ..., "tool_calls": [{"id", "name",
    "args"}]}` (tool calls are answered in OpenAI's format, finish_reason "tool_calls");
    `failing_models` answer 500 for requests naming them (a primary model that is down)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.reply = "Hello from the fake OpenAI server."
        self.fail_with: int | None = None
        self.hang = False
        self.script: list[dict[str, Any]] = []
        self.failing_models: set[str] = set()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                body["_authorization"] = self.headers.get("Authorization")
                fake.requests.append(body)
                if fake.hang:
                    time.sleep(3)
                    return
                failing = fake.fail_with or (500 if body["model"] in fake.failing_models else None)
                if failing:
                    self._json(
                        failing,
                        {
                            "error": {
                                "message": f"status {failing}",
                                "type": "x",
                                "code": None,
                            }
                        },
                    )
                    return
                with fake._lock:
                    scripted = fake.script.pop(0) if fake.script else None
                if scripted is None:
                    scripted = {"content": fake.reply}
                calls = [
                    {
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": call["name"], "arguments": json.dumps(call["args"])},
                    }
                    for call in scripted.get("tool_calls") or []
                ]
                text = scripted.get("content") or ""
                finish = "tool_calls" if calls else "stop"
                prompt_tokens = sum(
                    len(str(m.get("content", "")).split()) for m in body["messages"]
                )
                words = [w + " " for w in text.split()]
                usage = {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": len(words),
                    "total_tokens": prompt_tokens + len(words),
                }
                if body.get("stream"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    for index, call in enumerate(calls):
                        delta = {"role": "assistant", "tool_calls": [{"index": index, **call}]}
                        self._event({"choices": [{"index": 0, "delta": delta}]})
                    for word in words:
                        self._event(
                            {
                                "choices": [
                                    {
                                        "index": 0,
                                        "delta": {"role": "assistant", "content": word},
                                        "finish_reason": None,
                                    }
                                ]
                            }
                        )
                    self._event({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
                    if (body.get("stream_options") or {}).get("include_usage"):
                        self._event({"choices": [], "usage": usage})
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.close_connection = True
                    return
                self._json(
                    200,
                    {
                        "id": "chatcmpl-1",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {
                                    "role": "assistant",
                                    "content": text or None,
                                    **({"tool_calls": calls} if calls else {}),
                                },
                                "finish_reason": finish,
                            }
                        ],
                        "usage": usage,
                    },
                )

            def _event(self, data: dict[str, Any]) -> None:
                data = {
                    "id": "chatcmpl-1",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": "m",
                    **data,
                }
                self.wfile.write(f"data: {json.dumps(data)}\n\n".encode())
                self.wfile.flush()

            def _json(self, status: int, payload: dict[str, Any]) -> None:
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def openai_server(settings) -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    settings.OPENAI_BASE_URL = fake.url
    settings.OPENAI_API_KEY = "sk-test"
    settings.CHATTER_LLM_MAX_RETRIES = 0
    settings.CHATTER_LLM_TIMEOUT = 1
    yield fake
    fake.close()


@pytest.fixture
def conversation(user) -> Conversation:
    return Conversation.objects.create(owner=user, model="instant:Fine thanks.")


@pytest.fixture
def send(api_client):
    """POST a message as the conversation's owner; returns the response."""

    def post(conversation: Conversation, content: str = "Hello there", client=None):
        return (client or api_client).post(
            f"/api/v1/conversations/{conversation.pk}/messages/",
            {"content": content},
            format="json",
        )

    return post
