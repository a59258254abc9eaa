"""langchain-openai's ChatOpenAI pointed at Chatter: an agent is a chat model to LangChain,
with streaming, usage and tool calling (the client's tools) as OpenAI's API has them."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from agents.models import AgentInteraction
from tests.openai_api.support import call

pytestmark = pytest.mark.django_db(transaction=True)


@tool
def get_weather(city: str) -> str:
    """Today's weather in a city."""
    return f"Sunny in {city}."


@pytest.fixture
def chat(base_url, key):
    return ChatOpenAI(
        model="maths", base_url=base_url, api_key=key, max_retries=0, timeout=30, stream_usage=True
    )


def test_invoke_answers_with_the_agent_and_reports_usage(chat, user, make_agent, fake):
    make_agent(user, tools=[])

    reply = chat.invoke("Hi there")

    assert reply.content == fake.reply
    assert reply.usage_metadata["input_tokens"] == 5 + 2
    assert reply.usage_metadata["output_tokens"] == 6
    assert reply.response_metadata["model_name"] == "maths"
    assert reply.response_metadata["finish_reason"] == "stop"


def test_stream_yields_the_reply_in_chunks_with_usage(chat, user, make_agent, fake):
    make_agent(user, tools=[])

    chunks = list(chat.stream("Hi there"))

    assert "".join(str(c.content) for c in chunks) == fake.reply + " "
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert merged.usage_metadata["output_tokens"] == 6  # stream_usage: the last chunk's


def test_the_async_client_answers(chat, user, make_agent, fake):
    make_agent(user, tools=[])

    async def go():
        return await chat.ainvoke("Hi there")

    assert asyncio.run(go()).content == fake.reply


def test_bound_tools_come_back_as_tool_calls_then_the_tool_result_completes(
    chat, user, make_agent, fake
):
    agent = make_agent(user)
    model = chat.bind_tools([get_weather])
    fake.script = [
        {"tool_calls": [call("get_weather", {"city": "Oslo"}, "w1")]},
        {"content": "Sunny in Oslo, it says."},
    ]
    question = HumanMessage("Weather in Oslo?")

    asked = model.invoke([question])

    assert asked.tool_calls == [
        {"name": "get_weather", "args": {"city": "Oslo"}, "id": "w1", "type": "tool_call"}
    ]
    assert asked.response_metadata["finish_reason"] == "tool_calls"
    result = get_weather.invoke(asked.tool_calls[0])
    assert isinstance(result, ToolMessage)

    answered = model.invoke([question, asked, result])

    assert answered.content == "Sunny in Oslo, it says."
    sent = fake.requests[1]["messages"]
    assert sent[-1] == {"role": "tool", "content": "Sunny in Oslo.", "tool_call_id": "w1"}
    assert AgentInteraction.objects.filter(agent=agent).count() == 2


def test_streamed_tool_calls_reassemble_in_langchain(chat, user, make_agent, fake):
    make_agent(user)
    fake.script = [{"tool_calls": [call("get_weather", {"city": "Oslo"}, "w1")]}]

    chunks = list(chat.bind_tools([get_weather]).stream("Weather in Oslo?"))

    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert merged.tool_calls == [
        {"name": "get_weather", "args": {"city": "Oslo"}, "id": "w1", "type": "tool_call"}
    ]
