"""`GET models` lists the agents a key's user may use, in OpenAI's list shape."""

from __future__ import annotations

import openai
import pytest

from agents.models import Agent

pytestmark = pytest.mark.django_db(transaction=True)


def test_models_are_the_agents_the_user_may_use(sdk, user, other_user, staff_user, make_agent):
    mine = make_agent(user, slug="maths")
    shared = make_agent(staff_user, slug="support", name="Support", shared=True)
    make_agent(other_user, slug="secret", name="Theirs")
    make_agent(staff_user, slug="staff-own", name="Staff's own")
    make_agent(user, slug="retired", name="Retired", status=Agent.Status.INACTIVE)

    page = sdk.models.list()

    assert [m.id for m in page.data] == ["maths", "support"]
    assert sdk.models.with_raw_response.list().http_response.json()["data"] == [
        {
            "id": "maths",
            "object": "model",
            "created": int(mine.created_at.timestamp()),
            "owned_by": "alice",
        },
        {
            "id": "support",
            "object": "model",
            "created": int(shared.created_at.timestamp()),
            "owned_by": "chatter",
        },
    ]
    assert sdk.models.with_raw_response.list().http_response.json()["object"] == "list"


def test_an_own_agent_hides_a_shared_one_of_the_same_slug(sdk, user, staff_user, make_agent):
    make_agent(staff_user, slug="maths", shared=True)
    make_agent(user, slug="maths")

    assert [(m.id, m.owned_by) for m in sdk.models.list().data] == [("maths", "alice")]


def test_one_model_is_retrieved_by_its_slug(sdk, user, make_agent):
    make_agent(user)

    model = sdk.models.retrieve("maths")

    assert (model.id, model.object, model.owned_by) == ("maths", "model", "alice")


def test_another_users_private_agent_is_a_404(sdk, other_user, make_agent):
    make_agent(other_user, slug="secret")

    with pytest.raises(openai.NotFoundError) as raised:
        sdk.models.retrieve("secret")

    assert raised.value.body == {
        "message": raised.value.body["message"],
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
    assert "secret" in raised.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="secret", messages=[{"role": "user", "content": "Hi"}])
