"""The OpenAI-compatible API under /api/openai/v1/ (Ninja, async): ``models`` are the agents
a key's user may use, ``chat/completions`` answers with one of them. OpenAI documents this
contract, so it stays out of Chatter's /api/schema/; errors are in OpenAI's shape."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from ninja import NinjaAPI, Router
from ninja.errors import AuthenticationError

from accounts.authentication import NinjaApiKeyAuth, bearer_token
from core.asyncdb import db_call
from core.errors import ApplicationError
from openai_api.errors import application_error_body, openai_error
from openai_api.parsing import chat_request_parse
from openai_api.selectors import model_describe, model_get, model_list
from openai_api.services import completion_chunks, completion_create, completion_prepare
from web.exception_handlers import install_ninja_handlers
from web.http_policy import route_policy

router = Router(tags=["openai"])


@router.get("/models", summary="The agents this key may use, as OpenAI models")
def models(request: HttpRequest) -> dict[str, Any]:
    agents = model_list(user=request.auth.user)  # type: ignore[attr-defined]
    return {"object": "list", "data": [model_describe(agent) for agent in agents]}


@router.get("/models/{model}", summary="One agent, as an OpenAI model")
def model(request: HttpRequest, model: str) -> dict[str, Any]:
    return model_describe(model_get(user=request.auth.user, model=model))  # type: ignore[attr-defined]


def _sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


@router.post("/chat/completions", summary="A chat completion by an agent (model = its slug)")
@route_policy(rate="expensive")
async def chat_completions(request: HttpRequest) -> Any:
    started = time.monotonic()
    user = request.auth.user  # type: ignore[attr-defined]
    chat = chat_request_parse(request.body)
    # A connection authentication left in this request's thread is the one the next
    # db_call (same thread) uses, then gives back.
    completion = await db_call(completion_prepare, user=user, request=chat, started=started)
    if not chat.stream:
        return JsonResponse(await completion_create(completion))

    async def body() -> AsyncIterator[str]:
        # aclosing: a client that leaves stops the run at once.
        async with contextlib.aclosing(completion_chunks(completion)) as chunks:
            async for chunk in chunks:
                yield _sse(chunk)
                if "error" in chunk:
                    return  # OpenAI's streams end on an error, without [DONE]
        yield _sse("[DONE]")

    response = StreamingHttpResponse(body(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: don't buffer the stream
    return response


openai_ninja = NinjaAPI(
    title="Chatter OpenAI-compatible API",
    version="1",
    urls_namespace="openai-v1",
    openapi_url=None,  # OpenAI's contract, documented by OpenAI
    docs_url=None,
    auth=NinjaApiKeyAuth(),
)
# Chatter's handlers for everything (their envelope becomes OpenAI's shape in
# openai_api.errors' middleware); the API's own errors in OpenAI's words.
install_ninja_handlers(openai_ninja)


def _on_application_error(request: HttpRequest, exc: ApplicationError) -> JsonResponse:
    return JsonResponse({"error": application_error_body(exc)}, status=exc.status)


def _on_auth(request: HttpRequest, exc: AuthenticationError) -> JsonResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="api"'}
    if not bearer_token(request):
        return openai_error(
            401,
            "You didn't provide an API key: send a Chatter API key as "
            "'Authorization: Bearer chk_...'.",
            code="missing_api_key",
            headers=headers,
        )
    return openai_error(
        401,
        "Incorrect API key provided: it is invalid, revoked or expired.",
        code="invalid_api_key",
        headers=headers,
    )


def _on_permission(request: HttpRequest, exc: PermissionDenied) -> JsonResponse:
    return openai_error(403, str(exc) or "Permission denied.", code="insufficient_scope")


openai_ninja.add_exception_handler(ApplicationError, _on_application_error)
openai_ninja.add_exception_handler(AuthenticationError, _on_auth)
openai_ninja.add_exception_handler(PermissionDenied, _on_permission)
openai_ninja.add_router("", router)
