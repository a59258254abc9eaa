"""Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with the
status OpenAI's SDK maps to its exception classes; bad input is never a 500."""

from __future__ import annotations

import httpx
import openai
import pytest

from agents.models import AgentInteraction

HI = [{"role": "user", "content": "Hi"}]


def _error(response) -> dict:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


# --- through the SDK, against the live server ---------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_a_bad_key_is_a_401_the_sdk_raises_as_authentication_error(base_url, user, make_agent):
    make_agent(user)
    client = openai.OpenAI(base_url=base_url, api_key="chk_not-a-key", max_retries=0)

    with pytest.raises(openai.AuthenticationError) as raised:
        client.chat.completions.create(model="maths", messages=HI)

    assert raised.value.status_code == 401
    assert raised.value.body == {
        "message": "Incorrect API key provided: it is invalid, revoked or expired.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }


@pytest.mark.django_db(transaction=True)
def test_a_missing_key_is_a_401(base_url):
    response = httpx.get(f"{base_url}/models")

    assert response.status_code == 401
    assert _error(response)["code"] == "missing_api_key"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'


@pytest.mark.django_db(transaction=True)
def test_an_unknown_model_is_a_404(sdk, fake):
    with pytest.raises(openai.NotFoundError) as raised:
        sdk.chat.completions.create(model="nobody", messages=HI)

    assert raised.value.body["code"] == "model_not_found"
    assert raised.value.body["param"] == "model"
    assert fake.requests == []


@pytest.mark.django_db(transaction=True)
def test_a_malformed_body_is_a_400_naming_the_param(sdk, user, make_agent, fake):
    make_agent(user)

    with pytest.raises(openai.BadRequestError) as raised:
        sdk.chat.completions.create(model="maths", messages=HI, temperature=3)

    assert raised.value.status_code == 400
    assert raised.value.body["param"] == "temperature"
    assert raised.value.body["type"] == "invalid_request_error"
    assert fake.requests == [] and not AgentInteraction.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_past_its_rate_limit_a_key_gets_a_429_in_openais_shape(
    base_url, user, key_for, make_agent, fake
):
    make_agent(user, tools=[])
    client = openai.OpenAI(
        base_url=base_url, api_key=key_for(user, expensive_rate_limit="1/m"), max_retries=0
    )
    # The window is a calendar minute: its boundary may fall between two requests, never
    # between three sent within a minute, so the second or the third is refused.
    answered = 0
    for _ in range(3):
        try:
            client.chat.completions.create(model="maths", messages=HI)
        except openai.RateLimitError as exc:
            refused = exc
            break
        answered += 1
    else:
        pytest.fail("three requests within a minute on a 1/m key were all answered")

    assert answered in (1, 2)
    assert refused.status_code == 429
    assert refused.body["type"] == "requests"
    assert refused.body["code"] == "rate_limit_exceeded"
    assert int(refused.response.headers["Retry-After"]) > 0
    assert len(fake.requests) == answered  # a refused request never reached the model
    # Listing models is not an expensive request: the same key still may.
    assert [m.id for m in client.models.list().data] == ["maths"]


# --- in process: every refusal of the request's shape ------------------------------------------
@pytest.fixture
def post(api_client):
    def send(body, **kwargs):
        return api_client.post("/api/openai/v1/chat/completions", body, format="json", **kwargs)

    return send


TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
CALL = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"messages": HI}, "model", "missing_required_parameter"),
        ({"model": 7, "messages": HI}, "model", "invalid_type"),
        ({"model": "maths"}, "messages", "missing_required_parameter"),
        ({"model": "maths", "messages": []}, "messages", "empty_array"),
        ({"model": "maths", "messages": "Hi"}, "messages", "invalid_type"),
        ({"model": "maths", "messages": ["Hi"]}, "messages[0]", "invalid_type"),
        (
            {"model": "maths", "messages": [{"role": "wizard", "content": "x"}]},
            "messages[0].role",
            "invalid_value",
        ),
        (
            {"model": "maths", "messages": [{"role": "user"}]},
            "messages[0].content",
            "missing_required_parameter",
        ),
        (
            {
                "model": "maths",
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                ],
            },
            "messages[0].content[0].type",
            "invalid_value",
        ),
        (
            {"model": "maths", "messages": [{"role": "system", "content": "Be kind."}]},
            "messages",
            "invalid_value",
        ),
        (
            {
                "model": "maths",
                "messages": [*HI, {"role": "tool", "tool_call_id": "c9", "content": "x"}],
            },
            "messages[1].tool_call_id",
            "invalid_value",
        ),
        (
            {"model": "maths", "messages": [*HI, {"role": "assistant", "tool_calls": [CALL]}]},
            "messages[1].tool_calls",
            "invalid_value",
        ),
        (
            {
                "model": "maths",
                "messages": [
                    *HI,
                    {
                        "role": "assistant",
                        "tool_calls": [{**CALL, "function": {"name": "lookup", "arguments": "{"}}],
                    },
                    {"role": "tool", "tool_call_id": "c1", "content": "x"},
                ],
            },
            "messages[1].tool_calls[0].function.arguments",
            "invalid_value",
        ),
        (
            {"model": "maths", "messages": HI, "temperature": 2.5},
            "temperature",
            "decimal_out_of_range",
        ),
        ({"model": "maths", "messages": HI, "temperature": "hot"}, "temperature", "invalid_type"),
        ({"model": "maths", "messages": HI, "temperature": True}, "temperature", "invalid_value"),
        ({"model": "maths", "messages": HI, "max_tokens": 0}, "max_tokens", "integer_out_of_range"),
        (
            {"model": "maths", "messages": HI, "max_completion_tokens": 1.5},
            "max_completion_tokens",
            "invalid_type",
        ),
        ({"model": "maths", "messages": HI, "stream": "yes"}, "stream", "invalid_type"),
        (
            {"model": "maths", "messages": HI, "stream_options": {"include_usage": True}},
            "stream_options",
            "invalid_value",
        ),
        ({"model": "maths", "messages": HI, "n": 2}, "n", "invalid_value"),
        (
            {"model": "maths", "messages": HI, "response_format": {"type": "json_object"}},
            "response_format",
            "invalid_value",
        ),
        (
            {"model": "maths", "messages": HI, "functions": [{"name": "f"}]},
            "functions",
            "invalid_value",
        ),
        (
            {"model": "maths", "messages": HI, "tools": [{"type": "web"}]},
            "tools[0].type",
            "invalid_value",
        ),
        (
            {
                "model": "maths",
                "messages": HI,
                "tools": [{"type": "function", "function": {"name": "a b"}}],
            },
            "tools[0].function.name",
            "invalid_value",
        ),
        (
            {"model": "maths", "messages": HI, "tools": [TOOL, TOOL]},
            "tools[1].function.name",
            "invalid_value",
        ),
        (
            {"model": "maths", "messages": HI, "tools": [TOOL], "tool_choice": "always"},
            "tool_choice",
            "invalid_value",
        ),
        (
            {
                "model": "maths",
                "messages": HI,
                "tools": [TOOL],
                "tool_choice": {"type": "function", "function": {"name": "other"}},
            },
            "tool_choice",
            "invalid_value",
        ),
    ],
)
@pytest.mark.django_db
def test_each_malformed_request_is_a_400_naming_its_param(post, body, param, code):
    response = post(body)

    assert response.status_code == 400, response.content
    error = _error(response)
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert error["message"]


@pytest.mark.django_db
@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b""])
def test_a_body_that_is_not_a_json_object_is_a_400(api_client, raw):
    response = api_client.generic(
        "POST", "/api/openai/v1/chat/completions", raw, content_type="application/json"
    )

    assert response.status_code == 400
    assert _error(response)["type"] == "invalid_request_error"


# transaction: the view gives its database connections back (core.asyncdb), which a test's
# transaction would not survive.
@pytest.mark.django_db(transaction=True)
def test_a_client_tool_may_not_take_the_name_of_one_of_the_agents_tools(post, user):
    from agents.services import agent_create

    agent_create(actor=user, name="Maths", slug="maths", model="local", tools=["calculator"])
    tool = {"type": "function", "function": {"name": "calculator"}}

    response = post({"model": "maths", "messages": HI, "tools": [tool]})

    assert response.status_code == 400
    assert _error(response)["param"] == "tools[0].function.name"


@pytest.mark.django_db
def test_a_read_only_key_may_list_models_but_not_complete(client_for, user):
    client = client_for(user, scopes=["read"])

    assert client.get("/api/openai/v1/models").status_code == 200
    response = client.post(
        "/api/openai/v1/chat/completions", {"model": "x", "messages": HI}, format="json"
    )

    assert response.status_code == 403
    assert _error(response)["type"] == "permission_error"


@pytest.mark.django_db
def test_an_unknown_path_is_a_404_in_openais_shape(api_client):
    response = api_client.get("/api/openai/v1/embeddings")

    assert response.status_code == 404
    assert _error(response)["type"] == "invalid_request_error"


@pytest.mark.django_db
def test_a_wrong_method_is_a_405_in_openais_shape(api_client):
    response = api_client.get("/api/openai/v1/chat/completions")

    assert response.status_code == 405
    assert _error(response)["type"] == "invalid_request_error"


@pytest.mark.django_db
def test_a_body_nested_too_deep_is_refused_in_openais_shape(post):
    nested: object = "x"
    for _ in range(100):
        nested = [nested]

    response = post({"model": "maths", "messages": HI, "metadata": nested})

    assert response.status_code == 400
    assert _error(response)["code"] == "nested_too_deep"
