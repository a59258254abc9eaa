"""Real effects: a running experiment changes the prompt, model, parameters or workflow of
the conversation turns it covers, and each reply records its metric events."""

from __future__ import annotations

from decimal import Decimal

import pytest

import bench.providers  # noqa: F401  (registers the instant: test models)
from agents.models import Agent
from conversations.models import Conversation, Message, ModelPrice, ToolApproval
from experiments.models import Assignment, Experiment, Exposure, MetricEvent
from experiments.services import experiment_complete, experiment_pause

pytestmark = pytest.mark.django_db

TURN_METRICS = [
    {"name": "latency", "type": "response_time", "primary": True},
    {"name": "tokens", "type": "token_usage"},
    {"name": "spend", "type": "cost"},
    {"name": "errors", "type": "error_rate"},
    {"name": "turns", "type": "engagement"},
    {"name": "rating", "type": "user_satisfaction"},
]


def always(variant: dict, **overrides):
    """A running experiment whose every unit gets ``variant`` (the control weighs 0)."""
    return {
        "allocation": "weighted",
        "variants": [
            {"name": "control", "is_control": True, "weight": 0},
            {"name": "treatment", "weight": 1, **variant},
        ],
        "metrics": TURN_METRICS,
        **overrides,
    }


def send(client, conversation, content="Hello there"):
    response = client.post(
        f"/api/v1/conversations/{conversation.pk}/messages/", {"content": content}, format="json"
    )
    assert response.status_code == 201, response.json()
    return response.json()["assistant_message"]


@pytest.fixture
def gpt(user) -> Conversation:
    return Conversation.objects.create(
        owner=user, model="openai:test-model", system_prompt="You are terse.", temperature=0.3
    )


def test_a_prompt_experiment_changes_the_system_prompt_the_model_gets(
    api_client, user, gpt, openai_server, make_experiment
):
    experiment = make_experiment(
        user,
        start=True,
        **always({"configuration": {"system_prompt": "Be warm and friendly."}}),
    )
    ModelPrice.objects.create(
        model="test-model", input_per_million=Decimal("2"), output_per_million=Decimal("8")
    )

    reply = send(api_client, gpt, "Hi!")

    request = openai_server.requests[-1]
    assert request["messages"][0] == {"role": "system", "content": "Be warm and friendly."}
    assert request["temperature"] == 0.3  # what the experiment does not change stays
    assert reply["metadata"]["experiments"] == [
        {"id": str(experiment.pk), "key": experiment.key, "variant": "treatment"}
    ]
    assignment = Assignment.objects.get()
    assert (assignment.unit_id, assignment.variant.name, assignment.source) == (
        str(user.pk),
        "treatment",
        "turn",
    )
    exposure = Exposure.objects.get()
    assert (str(exposure.message_id), exposure.configuration) == (
        reply["id"],
        {"system_prompt": "Be warm and friendly."},
    )
    events = {
        e.metric: (e.value, e.source, str(e.message_id), e.variant.name)
        for e in MetricEvent.objects.select_related("variant")
    }
    message = Message.objects.get(pk=reply["id"])
    assert events == {
        "latency": (float(message.latency_ms), "turn", reply["id"], "treatment"),
        "tokens": (float(message.tokens_in + message.tokens_out), "turn", reply["id"], "treatment"),
        "spend": (float(message.cost), "turn", reply["id"], "treatment"),
        "errors": (0.0, "turn", reply["id"], "treatment"),
        "turns": (1.0, "turn", reply["id"], "treatment"),
    }
    assert message.cost > 0


def test_a_model_experiment_answers_with_the_variants_model(api_client, user, make_experiment):
    conversation = Conversation.objects.create(owner=user, model="instant:usual-model")
    make_experiment(
        user,
        start=True,
        **always({"configuration": {"model": "instant:variant-model"}}, type="model"),
    )

    reply = send(api_client, conversation)

    assert reply["content"].strip() == "variant-model"
    assert Message.objects.get(pk=reply["id"]).model == "instant:variant-model"
    assert Conversation.objects.get(pk=conversation.pk).model == "instant:usual-model"


def test_a_parameter_experiment_changes_temperature_and_max_tokens(
    api_client, user, gpt, openai_server, make_experiment
):
    make_experiment(
        user,
        start=True,
        **always({"configuration": {"temperature": 1.4, "max_tokens": 33}}, type="parameter"),
    )

    send(api_client, gpt)

    request = openai_server.requests[-1]
    assert request["temperature"] == 1.4
    assert request.get("max_tokens", request.get("max_completion_tokens")) == 33
    assert request["messages"][0]["content"] == "You are terse."


def test_a_workflow_experiment_runs_the_variants_graph_for_the_turn_only(
    api_client, user, make_experiment
):
    conversation = Conversation.objects.create(owner=user, model="local", workflow="basic")
    make_experiment(
        user, start=True, **always({"configuration": {"workflow": "rag"}}, type="workflow")
    )

    reply = send(api_client, conversation)

    assert "sources" in reply["metadata"]  # what only the rag graph's retrieval records
    assert Conversation.objects.get(pk=conversation.pk).workflow == "basic"


def test_the_variant_is_sticky_across_turns(api_client, user, make_experiment):
    conversation = Conversation.objects.create(owner=user, model="instant:ok")
    experiment = make_experiment(user, start=True, metrics=TURN_METRICS)

    first = send(api_client, conversation, "one")
    second = send(api_client, conversation, "two")

    assert first["metadata"]["experiments"] == second["metadata"]["experiments"]
    assert Assignment.objects.filter(experiment=experiment).count() == 1
    assert MetricEvent.objects.filter(metric="turns").count() == 2


def test_feedback_on_the_reply_is_its_variants_satisfaction_event(
    api_client, user, make_experiment
):
    conversation = Conversation.objects.create(owner=user, model="instant:ok")
    make_experiment(user, start=True, **always({"configuration": {"system_prompt": "Hi."}}))
    reply = send(api_client, conversation)

    for rating, expected in ((1, 1.0), (-1, 0.0)):  # a new rating replaces the last
        response = api_client.post(
            f"/api/v1/messages/{reply['id']}/feedback/",
            {"rating": rating, "scale": "thumbs"},
            format="json",
        )
        assert response.status_code == 200, response.json()
        event = MetricEvent.objects.get(metric="rating")
        assert (event.value, event.source, str(event.message_id)) == (
            expected,
            "feedback",
            reply["id"],
        )
    stars = api_client.post(
        f"/api/v1/messages/{reply['id']}/feedback/",
        {"rating": 4, "scale": "stars"},
        format="json",
    )
    assert stars.status_code == 200, stars.json()
    assert MetricEvent.objects.get(metric="rating").value == 0.75


def test_a_failed_reply_records_an_error_and_no_latency(
    api_client, user, gpt, openai_server, make_experiment
):
    make_experiment(user, start=True, **always({"configuration": {"system_prompt": "Hi."}}))
    openai_server.fail_with = 500

    response = api_client.post(
        f"/api/v1/conversations/{gpt.pk}/messages/", {"content": "Hi"}, format="json"
    )

    assert response.status_code == 502
    assert {e.metric: e.value for e in MetricEvent.objects.all()} == {"errors": 1.0, "turns": 1.0}


def test_a_paused_experiment_changes_no_turn(api_client, user, gpt, openai_server, make_experiment):
    experiment = make_experiment(
        user, start=True, **always({"configuration": {"system_prompt": "Be warm."}})
    )
    experiment_pause(experiment=experiment, actor=user)

    reply = send(api_client, gpt)

    assert openai_server.requests[-1]["messages"][0]["content"] == "You are terse."
    assert "experiments" not in reply["metadata"]
    assert not Assignment.objects.exists() and not MetricEvent.objects.exists()


def test_a_users_experiment_covers_only_their_conversations_and_staffs_cover_all(
    api_client, other_client, user, other_user, staff_user, make_experiment
):
    mine = Conversation.objects.create(owner=user, model="instant:plain")
    theirs = Conversation.objects.create(owner=other_user, model="instant:plain")
    make_experiment(
        user, start=True, **always({"configuration": {"model": "instant:mine"}}, type="model")
    )

    assert send(api_client, mine)["content"].strip() == "mine"
    assert send(other_client, theirs)["content"].strip() == "plain"

    Experiment.objects.update(status="cancelled")
    make_experiment(
        staff_user,
        start=True,
        **always({"configuration": {"model": "instant:everyone"}}, type="model"),
    )
    assert send(other_client, theirs)["content"].strip() == "everyone"


def test_an_agent_experiment_covers_only_that_agents_conversations(
    api_client, user, make_experiment
):
    agent = Agent.objects.create(
        owner=user, name="Helper", slug="helper", model="instant:agent-default"
    )
    with_agent = Conversation.objects.create(owner=user, agent=agent, workflow="agent")
    without = Conversation.objects.create(owner=user, model="instant:plain")
    make_experiment(
        user,
        start=True,
        agent_id=agent.pk,
        **always({"configuration": {"model": "instant:agent-variant"}}, type="model"),
    )

    assert send(api_client, with_agent)["content"].strip() == "agent-variant"
    assert send(api_client, without)["content"].strip() == "plain"


def test_two_experiments_on_the_same_setting_are_exclusive(api_client, user, make_experiment):
    conversation = Conversation.objects.create(owner=user, model="instant:plain")
    first = make_experiment(
        user, start=True, **always({"configuration": {"model": "instant:first"}}, type="model")
    )
    make_experiment(
        user,
        start=True,
        key="second",
        **always({"configuration": {"model": "instant:second"}}, type="model"),
    )

    reply = send(api_client, conversation)

    assert reply["content"].strip() == "first"
    assert [e["key"] for e in reply["metadata"]["experiments"]] == [first.key]


def test_a_winner_promoted_to_defaults_keeps_serving_every_covered_turn(
    api_client, user, make_experiment
):
    conversation = Conversation.objects.create(owner=user, model="instant:plain")
    experiment = make_experiment(
        user,
        start=True,
        type="model",
        variants=[
            {"name": "control", "is_control": True},
            {"name": "better", "configuration": {"model": "instant:the-winner"}},
        ],
    )
    experiment_complete(experiment=experiment, actor=user, winner="better", promote="defaults")

    reply = send(api_client, conversation)

    assert reply["content"].strip() == "the-winner"
    assert "experiments" not in reply["metadata"]  # no longer an experiment: no records
    assert not MetricEvent.objects.exists()


def test_completing_with_promotion_to_the_agent_writes_its_settings(
    api_client, user, make_experiment
):
    agent = Agent.objects.create(owner=user, name="Helper", slug="helper", system_prompt="Old.")
    experiment = make_experiment(
        user,
        start=True,
        agent_id=agent.pk,
        variants=[
            {"name": "control", "is_control": True},
            {"name": "warm", "configuration": {"system_prompt": "Be warm."}},
        ],
    )

    response = api_client.post(
        f"/api/v1/experiments/{experiment.pk}/complete/",
        {"winner": "warm", "promote": "agent"},
        format="json",
    )

    assert response.status_code == 200, response.json()
    assert response.json()["promoted_to"] == "agent"
    agent.refresh_from_db()
    assert agent.system_prompt == "Be warm."
    assert agent.prompt_versions.count() == 1


def test_a_promotion_the_user_may_not_make_leaves_the_experiment_running(
    api_client, user, staff_user, make_experiment
):
    shared = Agent.objects.create(owner=None, name="Shared", slug="shared", system_prompt="Old.")
    experiment = make_experiment(
        user,
        start=True,
        agent_id=shared.pk,
        variants=[
            {"name": "control", "is_control": True},
            {"name": "warm", "configuration": {"system_prompt": "Be warm."}},
        ],
    )

    response = api_client.post(
        f"/api/v1/experiments/{experiment.pk}/complete/",
        {"winner": "warm", "promote": "agent"},
        format="json",
    )

    assert response.status_code == 403
    assert Experiment.objects.get().status == "running"
    shared.refresh_from_db()
    assert shared.system_prompt == "Old."


@pytest.mark.django_db(transaction=True)
def test_a_streamed_turn_is_changed_and_recorded_the_same_way(api_client, user, make_experiment):
    from tests.conversations.test_openai_http import stream

    conversation = Conversation.objects.create(owner=user, model="instant:plain")
    make_experiment(
        user,
        start=True,
        **always({"configuration": {"model": "instant:streamed-variant"}}, type="model"),
    )

    status, events = stream(conversation, api_client.raw_key, "Stream please")

    assert status == 200 and events[-1][0] == "done"
    assert "".join(d["content"] for kind, d in events if kind == "delta").strip() == (
        "streamed-variant"
    )
    reply = Message.objects.get(pk=events[-1][1]["assistant_message_id"])
    assert reply.metadata["experiments"][0]["variant"] == "treatment"
    assert {e.metric for e in MetricEvent.objects.filter(message_id=reply.pk)} == {
        "latency",
        "tokens",
        "errors",
        "turns",
    }


def test_a_reply_resumed_after_an_approval_keeps_its_variant(
    api_client, user, openai_server, make_experiment, settings
):
    from agents.services import agent_create

    settings.CHATTER_TOOLS_REQUIRING_APPROVAL = frozenset({"calculator"})
    agent = agent_create(
        actor=user,
        name="Maths",
        slug="maths",
        system_prompt="You are the maths agent.",
        model="openai:primary",
        tools=["calculator"],
    )
    make_experiment(
        user,
        start=True,
        agent_id=agent.pk,
        **always({"configuration": {"system_prompt": "You are the friendly maths agent."}}),
    )
    conversation = api_client.post(
        "/api/v1/conversations/", {"agent": "maths"}, format="json"
    ).json()
    openai_server.script = [
        {"tool_calls": [{"id": "c-1", "name": "calculator", "args": {"expression": "6*7"}}]},
        {"content": "It is 42."},
    ]

    paused = send(api_client, Conversation.objects.get(pk=conversation["id"]), "Six times seven?")
    approval = ToolApproval.objects.get()
    decided = api_client.post(
        f"/api/v1/conversations/{conversation['id']}/approvals/{approval.pk}/",
        {"decision": "approve"},
        format="json",
    )

    assert paused["status"] == "awaiting_approval"
    assert decided.status_code == 200, decided.json()
    final = decided.json()["assistant_message"]
    assert final["id"] == paused["id"] and final["content"] == "It is 42."
    prompts = [r["messages"][0]["content"] for r in openai_server.requests]
    assert prompts == ["You are the friendly maths agent."] * 2
    assert final["metadata"]["experiments"][0]["variant"] == "treatment"
    assert MetricEvent.objects.filter(message_id=final["id"], metric="turns").count() == 1
    assert Exposure.objects.filter(message_id=final["id"]).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_stream_its_reader_left_records_what_it_spent_and_no_error(user, make_experiment):
    """The turn's own path (the stream's task, cancelled when its reader goes), without
    HTTP: the partial reply is kept, and its experiment counts its tokens and the reply,
    not an error or a response time."""
    import asyncio
    import time

    from asgiref.sync import async_to_sync, sync_to_async

    from conversations.services.streaming import Token, message_stream

    conversation = Conversation.objects.create(owner=user, model="paced:60:40")  # 2.4 s
    make_experiment(user, start=True, **always({"configuration": {"system_prompt": "Go on."}}))

    def incomplete() -> Message | None:
        # The reply's row is there from the start, empty until the turn ends; its metric
        # events are written just after it.
        reply = (
            Message.objects.filter(
                conversation=conversation, role="assistant", status=Message.Status.INCOMPLETE
            )
            .exclude(content="")
            .first()
        )
        recorded = reply and MetricEvent.objects.filter(message_id=reply.pk, metric="turns")
        return reply if recorded and recorded.exists() else None

    async def leave_after_three_tokens() -> Message | None:
        events = await message_stream(
            user=user, conversation_id=conversation.pk, content="A long story"
        )
        tokens = 0
        async for event in events:
            tokens += isinstance(event, Token)
            if tokens == 3:
                break
        await events.aclose()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if reply := await sync_to_async(incomplete)():
                return reply
            await asyncio.sleep(0.05)
        return None

    reply = async_to_sync(leave_after_three_tokens)()

    assert reply is not None and reply.content.startswith("t0 t1 t2")
    events = {e.metric: e.value for e in MetricEvent.objects.filter(message_id=reply.pk)}
    assert events == {
        "tokens": float(reply.tokens_in + reply.tokens_out),
        "errors": 0.0,
        "turns": 1.0,
    }
