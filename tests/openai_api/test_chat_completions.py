"""Chat completions through the official `openai` SDK (sync and async) against a live
Chatter: the agent's prompt and settings, its own tools run inside, the client's tools
answered as tool_calls, and an interaction recorded for each completion."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from agents.models import AgentInteraction
from agents.services import variant_create
from tests.openai_api.support import WEATHER_TOOL, call, tool_messages

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_completion_answers_with_the_agents_prompt_and_settings(sdk, user, make_agent, fake):
    agent = make_agent(user, tools=[])

    completion = sdk.chat.completions.create(
        model="maths", messages=[{"role": "user", "content": "Hi!"}]
    )

    assert completion.model == "maths" and completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    [choice] = completion.choices
    assert choice.message.role == "assistant" and choice.message.content == fake.reply
    assert choice.finish_reason == "stop" and choice.message.tool_calls is None
    [request] = fake.requests
    assert request["model"] == "primary" and request["temperature"] == 0.2
    assert request.get("max_tokens", request.get("max_completion_tokens")) == 300
    assert request["messages"] == [
        {"role": "system", "content": "You are the maths agent."},
        {"role": "user", "content": "Hi!"},
    ]
    assert "tools" not in request
    assert completion.usage.prompt_tokens == 6  # as the upstream counted them
    assert completion.usage.completion_tokens == 6
    assert completion.usage.total_tokens == 12
    interaction = AgentInteraction.objects.get(agent=agent)
    assert str(interaction.pk).replace("-", "") == completion.id.removeprefix("chatcmpl-")
    assert interaction.source == "openai" and interaction.user == user
    assert (interaction.tokens_in, interaction.tokens_out) == (6, 6)
    assert interaction.model_used == "openai:primary" and interaction.error == ""
    assert interaction.conversation_id is None and interaction.tool_call_count == 0


def test_the_clients_system_messages_temperature_and_max_tokens_apply(sdk, user, make_agent, fake):
    make_agent(user, tools=[])

    sdk.chat.completions.create(
        model="maths",
        messages=[
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": "Salut !"},
            {"role": "user", "content": [{"type": "text", "text": "Again?"}]},
        ],
        temperature=1.5,
        max_completion_tokens=40,
    )

    [request] = fake.requests
    assert request["temperature"] == 1.5
    assert request.get("max_tokens", request.get("max_completion_tokens")) == 40
    assert request["messages"] == [
        {"role": "system", "content": "You are the maths agent.\n\nAnswer in French."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Salut !"},
        {"role": "user", "content": "Again?"},
    ]


def test_the_agents_own_tool_runs_inside_and_only_the_final_answer_comes_back(
    sdk, user, make_agent, fake
):
    agent = make_agent(user)
    fake.script = [
        {
            "content": "Let me compute.",
            "tool_calls": [call("calculator", {"expression": "6 * 7"}, "c1")],
        },
        {"content": "It is 42."},
    ]

    completion = sdk.chat.completions.create(
        model="maths", messages=[{"role": "user", "content": "What is six times seven?"}]
    )

    [choice] = completion.choices
    assert choice.message.content == "It is 42."
    assert choice.finish_reason == "stop" and choice.message.tool_calls is None
    asked, answered = fake.requests
    assert [t["function"]["name"] for t in asked["tools"]] == ["calculator"]
    assert tool_messages(answered) == [{"role": "tool", "content": "42", "tool_call_id": "c1"}]
    # Both model calls are paid for: the usage counts them.
    assert completion.usage.completion_tokens == 3 + 3  # "Let me compute." and "It is 42."
    interaction = AgentInteraction.objects.get(agent=agent)
    [traced] = interaction.tool_calls
    assert {k: traced[k] for k in ("id", "name", "args", "result", "error")} == {
        "id": "c1",
        "name": "calculator",
        "args": {"expression": "6 * 7"},
        "result": "42",
        "error": "",
    }
    assert interaction.tool_call_count == 1


def test_client_tools_come_back_as_tool_calls_and_the_follow_up_completes(
    sdk, user, make_agent, fake
):
    agent = make_agent(user)
    fake.script = [{"tool_calls": [call("get_weather", {"city": "Oslo"}, "w1")]}]
    question = {"role": "user", "content": "Weather in Oslo?"}

    first = sdk.chat.completions.create(model="maths", messages=[question], tools=[WEATHER_TOOL])

    [choice] = first.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [tool_call] = choice.message.tool_calls
    assert (tool_call.id, tool_call.type, tool_call.function.name) == (
        "w1",
        "function",
        "get_weather",
    )
    assert json.loads(tool_call.function.arguments) == {"city": "Oslo"}
    # The model saw the agent's tools and the client's, side by side.
    offered = [t["function"]["name"] for t in fake.requests[0]["tools"]]
    assert offered == ["calculator", "get_weather"]
    assert (
        fake.requests[0]["tools"][1]["function"]["parameters"]
        == WEATHER_TOOL["function"]["parameters"]
    )

    fake.script = [{"content": "Sunny in Oslo."}]
    second = sdk.chat.completions.create(
        model="maths",
        messages=[
            question,
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": "w1", "content": "Sunny, 21 C"},
        ],
        tools=[WEATHER_TOOL],
    )

    assert second.choices[0].message.content == "Sunny in Oslo."
    assert second.choices[0].finish_reason == "stop"
    sent = fake.requests[1]["messages"]
    assert sent[2]["role"] == "assistant" and sent[2]["tool_calls"][0]["id"] == "w1"
    assert sent[3] == {"role": "tool", "content": "Sunny, 21 C", "tool_call_id": "w1"}
    first_interaction, second_interaction = AgentInteraction.objects.filter(agent=agent).order_by(
        "created_at"
    )
    assert first_interaction.tool_calls[0]["name"] == "get_weather"
    assert first_interaction.tool_calls[0]["client"] is True
    assert second_interaction.tool_call_count == 0


@pytest.mark.parametrize(
    ("tool_choice", "sent"),
    [
        ("required", "required"),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "function", "function": {"name": "get_weather"}},
        ),
    ],
)
def test_tool_choice_goes_to_the_model(sdk, user, make_agent, fake, tool_choice, sent):
    make_agent(user)
    fake.script = [{"tool_calls": [call("get_weather", {"city": "Oslo"}, "w1")]}]

    sdk.chat.completions.create(
        model="maths",
        messages=[{"role": "user", "content": "Weather?"}],
        tools=[WEATHER_TOOL],
        tool_choice=tool_choice,
    )

    assert fake.requests[0]["tool_choice"] == sent


def test_tool_choice_none_offers_the_model_no_tool(sdk, user, make_agent, fake):
    make_agent(user)

    sdk.chat.completions.create(
        model="maths",
        messages=[{"role": "user", "content": "Weather?"}],
        tools=[WEATHER_TOOL],
        tool_choice="none",
    )

    assert "tools" not in fake.requests[0]


def test_the_async_sdk_completes(base_url, key, user, make_agent, fake):
    make_agent(user, tools=[])

    async def go():
        async with openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0) as client:
            return await client.chat.completions.create(
                model="maths", messages=[{"role": "user", "content": "Hi"}]
            )

    completion = asyncio.run(go())

    assert completion.choices[0].message.content == fake.reply


def test_a_variant_chosen_for_the_completion_answers_and_is_recorded(sdk, user, make_agent, fake):
    agent = make_agent(user, tools=[])
    variant = variant_create(
        agent=agent, name="brief", system_prompt="Be brief.", parameters={"temperature": 0.9}
    )

    sdk.chat.completions.create(model="maths", messages=[{"role": "user", "content": "Hi"}])

    [request] = fake.requests
    assert request["messages"][0] == {"role": "system", "content": "Be brief."}
    assert request["temperature"] == 0.9
    interaction = AgentInteraction.objects.get(agent=agent)
    assert interaction.variant == variant and interaction.choice.variant == variant


def test_the_fallback_model_answers_when_the_primary_fails(sdk, user, make_agent, fake):
    agent = make_agent(user, tools=[], fallback_model="openai:backup")
    fake.failing_models = {"primary"}

    completion = sdk.chat.completions.create(
        model="maths", messages=[{"role": "user", "content": "Hi"}]
    )

    assert completion.choices[0].message.content == fake.reply
    assert [r["model"] for r in fake.requests] == ["primary", "backup"]
    assert AgentInteraction.objects.get(agent=agent).model_used == "openai:backup"


def test_a_provider_failure_is_an_openai_error_and_an_interaction_with_its_error(
    sdk, user, make_agent, fake
):
    agent = make_agent(user, tools=[])
    fake.fail_with = 500

    with pytest.raises(openai.InternalServerError) as raised:
        sdk.chat.completions.create(model="maths", messages=[{"role": "user", "content": "Hi"}])

    assert raised.value.status_code == 502
    assert raised.value.body["type"] == "server_error"
    assert raised.value.body["code"] == "provider_error"
    interaction = AgentInteraction.objects.get(agent=agent)
    assert interaction.error.startswith("The model provider failed")


def test_completions_count_in_the_agents_metrics(sdk, api_client, user, make_agent, fake):
    agent = make_agent(user, tools=[])

    for _ in range(2):
        sdk.chat.completions.create(model="maths", messages=[{"role": "user", "content": "Hi"}])

    metrics = api_client.get(f"/api/v1/agents/{agent.pk}/metrics/").json()
    assert metrics["replies"] == 2


@pytest.fixture
def approval_tool():
    from langchain_core.tools import StructuredTool

    from agents.tools.registry import ToolSpec, tool_register, tool_unregister

    def build(context):
        return StructuredTool.from_function(
            func=lambda text: text.upper(), name="shout", description="Shouts."
        )

    tool_register(
        ToolSpec(name="shout", description="Shouts.", factory=build, requires_approval=True),
        replace=True,
    )
    yield
    tool_unregister("shout")


def test_a_tool_that_needs_approval_is_not_offered(
    api_client, user, make_agent, fake, approval_tool
):
    # In process: the tool is registered here only. A stateless completion cannot pause for
    # a person's approval, so the model is not offered the tool.
    make_agent(user, tools=["calculator", "shout"])

    response = api_client.post(
        "/api/openai/v1/chat/completions",
        {"model": "maths", "messages": [{"role": "user", "content": "Shout hi"}]},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert response.json()["choices"][0]["message"]["content"] == fake.reply
    assert [t["function"]["name"] for t in fake.requests[0]["tools"]] == ["calculator"]
