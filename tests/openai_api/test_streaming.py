"""Streamed chat completions (`stream: true`): OpenAI's chunks over SSE, read by the `openai`
SDK (sync and async) and as raw lines; the agent's own tool steps never reach the stream."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from agents.models import AgentInteraction
from tests.openai_api.support import WEATHER_TOOL, call, tool_messages

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_stream_sends_the_role_the_text_the_finish_and_the_usage(sdk, user, make_agent, fake):
    agent = make_agent(user, tools=[])

    chunks = list(
        sdk.chat.completions.create(
            model="maths",
            messages=[{"role": "user", "content": "Stream please"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert fake.requests[0]["stream"] is True
    assert {chunk.id for chunk in chunks} == {chunks[0].id}
    assert {chunk.model for chunk in chunks} == {"maths"}
    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}
    first, *middle, finish, usage = chunks
    assert first.choices[0].delta.role == "assistant"
    texts = [chunk.choices[0].delta.content for chunk in middle]
    assert len(texts) == 6  # one chunk per upstream token
    assert "".join(texts) == fake.reply + " "
    assert all(chunk.choices[0].finish_reason is None for chunk in [first, *middle])
    assert all(chunk.usage is None for chunk in [first, *middle, finish])
    assert finish.choices[0].finish_reason == "stop" and finish.choices[0].delta.content is None
    assert usage.choices == []
    assert (usage.usage.prompt_tokens, usage.usage.completion_tokens) == (5 + 2, 6)
    interaction = AgentInteraction.objects.get(agent=agent)
    assert interaction.tokens_out == 6 and interaction.source == "openai"


def test_without_include_usage_no_chunk_carries_usage(sdk, user, make_agent, fake):
    make_agent(user, tools=[])

    chunks = list(
        sdk.chat.completions.create(
            model="maths", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
    )

    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(chunk.usage is None and chunk.choices for chunk in chunks)


def test_the_raw_stream_is_data_lines_ending_with_done(base_url, key, user, make_agent, fake):
    make_agent(user, tools=[])

    with httpx.stream(
        "POST",
        f"{base_url}/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "maths", "messages": [{"role": "user", "content": "Hi"}], "stream": True},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]

    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2][6:])["choices"][0]["finish_reason"] == "stop"


def test_a_stream_shows_only_the_final_answer_of_a_tool_using_agent(sdk, user, make_agent, fake):
    agent = make_agent(user)
    fake.script = [
        {
            "content": "Let me compute.",
            "tool_calls": [call("calculator", {"expression": "6 * 7"}, "c1")],
        },
        {"content": "It is 42."},
    ]

    chunks = list(
        sdk.chat.completions.create(
            model="maths",
            messages=[{"role": "user", "content": "Six times seven?"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "It is 42. "
    assert not any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].usage.completion_tokens == 3 + 3  # both model calls
    assert tool_messages(fake.requests[1]) == [
        {"role": "tool", "content": "42", "tool_call_id": "c1"}
    ]
    assert AgentInteraction.objects.get(agent=agent).tool_calls[0]["result"] == "42"


def test_client_tool_calls_stream_as_tool_call_deltas(sdk, user, make_agent, fake):
    make_agent(user)
    fake.script = [{"tool_calls": [call("get_weather", {"city": "Oslo"}, "w1")]}]

    chunks = list(
        sdk.chat.completions.create(
            model="maths",
            messages=[{"role": "user", "content": "Weather in Oslo?"}],
            tools=[WEATHER_TOOL],
            stream=True,
        )
    )

    deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    [delta] = deltas
    assert (delta.index, delta.id, delta.type) == (0, "w1", "function")
    assert delta.function.name == "get_weather"
    assert json.loads(delta.function.arguments) == {"city": "Oslo"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_the_async_sdk_streams(base_url, key, user, make_agent, fake):
    make_agent(user, tools=[])

    async def go():
        async with openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0) as client:
            stream = await client.chat.completions.create(
                model="maths", messages=[{"role": "user", "content": "Hi"}], stream=True
            )
            return [chunk async for chunk in stream]

    chunks = asyncio.run(go())

    assert "".join(c.choices[0].delta.content or "" for c in chunks) == fake.reply + " "
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_a_provider_failure_mid_stream_is_an_error_the_sdk_raises(sdk, user, make_agent, fake):
    agent = make_agent(user, tools=[])
    fake.fail_with = 500

    stream = sdk.chat.completions.create(
        model="maths", messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    with pytest.raises(openai.APIError) as raised:
        list(stream)

    assert raised.value.body["code"] == "provider_error"
    assert raised.value.body["type"] == "server_error"
    assert AgentInteraction.objects.get(agent=agent).error.startswith("The model provider failed")


def test_a_model_that_does_not_stream_still_streams_its_answer(sdk, user, make_agent, fake):
    # bench.providers' tool-calling model answers whole (no token stream): its final text
    # comes in one chunk, after its calculator step.
    agent = make_agent(user, model="instant-tool:calculator")

    chunks = list(
        sdk.chat.completions.create(
            model="maths", messages=[{"role": "user", "content": "Six times seven?"}], stream=True
        )
    )

    assert [c.choices[0].delta.content for c in chunks[1:-1]] == ["The tool said 42."]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert AgentInteraction.objects.get(agent=agent).tool_calls[0]["result"] == "42"


def test_the_local_provider_streams_its_plain_notice(sdk, user, make_agent):
    make_agent(user, model="local", tools=[])

    chunks = list(
        sdk.chat.completions.create(
            model="maths", messages=[{"role": "user", "content": "Hello"}], stream=True
        )
    )

    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert "No language model is configured" in text
