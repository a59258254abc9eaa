from __future__ import annotations

import time
from typing import Any

from plugins.context import PluginResponse, Refusal

VERSION = "1.0.0"


def before(ctx: Any, request: Any) -> Any:
    if ctx.config.get("slow_middleware"):
        time.sleep(float(ctx.config["slow_middleware"]))
    if request.headers.get("x-sink-block"):
        return Refusal(403, "sink_blocked", "The sink plugin refuses this request.")
    return None


def after(ctx: Any, request: Any, response: dict) -> dict:
    return {"X-Sink-Seen": f"{VERSION} {response['status']}", "Set-Cookie": "refused=1"}


def echo(ctx: Any, request: Any) -> dict:
    return {
        "version": VERSION,
        "greeting": ctx.config.get("greeting", ""),
        "user_id": request.user_id,
        "body": request.body,
        "saw_authorization": "authorization" in request.headers,
    }


def boom(ctx: Any, request: Any) -> dict:
    raise RuntimeError("boom, as asked")


def refuse(ctx: Any, request: Any) -> PluginResponse:
    return PluginResponse(400, {"error": {"code": "sink_bad", "message": "no", "details": {}}})


def fetch(ctx: Any, request: Any) -> dict:
    answer = ctx.http_get(ctx.config["url"])
    return {"status": answer["status"], "text": answer["text"]}


def search(ctx: Any, request: Any) -> list:
    return ctx.knowledge_search("anything")


def reply(ctx: Any, messages: list[dict], settings: dict) -> str:
    last = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    return f"{ctx.config.get('greeting', 'echo')}: {last} ({len(messages)} messages)"


def count(ctx: Any, job: Any, by: int = 1) -> dict:
    return {"runs": ctx.data_incr("runs", by), "attempt": job.attempt}


def health(ctx: Any) -> dict:
    if ctx.config.get("unhealthy"):
        raise RuntimeError("unhealthy by configuration")
    return {"version": VERSION}


def greet(ctx: Any, request: Any) -> dict:
    """Greet someone by name."""
    return {"greeting": f"Hello, {request.body['name']}!"}


def shout(ctx: Any, text: str) -> str:
    return text.upper()


def register(plugin: Any) -> None:
    plugin.middleware(before=before, after=after)
    plugin.route("echo", echo, methods=("GET", "POST"))
    plugin.route("boom", boom)
    plugin.route("refuse", refuse)
    plugin.route("fetch", fetch)
    plugin.route("search", search)
    plugin.route("admin-only", echo, staff_only=True)
    plugin.route(
        "greet",
        greet,
        methods=("POST",),
        request_schema={
            "type": "object",
            "properties": {"name": {"type": "string", "minLength": 1}},
            "required": ["name"],
            "additionalProperties": False,
        },
        response_schema={"type": "object", "properties": {"greeting": {"type": "string"}}},
    )
    plugin.workflow("sink_echo", description="Echoes the last message.", reply=reply)
    plugin.job_handler("count", func=count, timeout=30)
    plugin.tool(
        "sink_shout",
        description="Upper-cases a text.",
        func=shout,
        args_schema={
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    )
    plugin.health_check(health)
