"""Deleting a conversation while its turn runs: the turn ends with a clear 404, and the
deleted thread's checkpoints stay deleted."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from bench.providers import ScriptedChatModel
from conversations.checkpointer import get_checkpointer, thread_config
from conversations.models import Conversation, Message
from conversations.providers import register_provider

from .test_openai_http import stream

pytestmark = pytest.mark.django_db(transaction=True)


class DeletedMidReply(ScriptedChatModel):
    """Deletes its conversation through the API while it is producing the reply."""

    hook: Any = None

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        self.hook()
        return super()._generate(*args, **kwargs)

    async def _astream(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.to_thread(self.hook)
        async for chunk in super()._astream(*args, **kwargs):
            yield chunk


@pytest.fixture
def deleting_conversation(user, api_client):
    conversation = Conversation.objects.create(owner=user, model="deleted-mid-reply:x")
    deleted = []

    def delete() -> None:
        # Another request, on its own connection and thread, as a second client would.
        worker = threading.Thread(
            target=lambda: deleted.append(
                api_client.delete(f"/api/v1/conversations/{conversation.pk}/").status_code
            )
        )
        worker.start()
        worker.join(60)

    register_provider(
        "deleted-mid-reply",
        lambda model, options: DeletedMidReply(tokens=["so ", "long "], hook=delete),
    )
    yield conversation
    assert deleted == [204]


def test_the_json_send_answers_404_when_its_conversation_is_deleted_meanwhile(
    api_client, deleting_conversation
):
    response = api_client.post(
        f"/api/v1/conversations/{deleting_conversation.pk}/messages/",
        {"content": "hello"},
        format="json",
    )

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "conversation_deleted"
    assert not Message.objects.filter(conversation_id=deleting_conversation.pk).exists()
    thread = thread_config(str(deleting_conversation.pk))
    assert get_checkpointer().get_tuple(thread) is None


def test_the_stream_ends_with_an_error_event_when_its_conversation_is_deleted_meanwhile(
    api_client, deleting_conversation
):
    status, events = stream(deleting_conversation, api_client.raw_key, "hello")

    assert status == 200
    assert events[0][0] == "start"
    kind, data = events[-1]
    assert kind == "error" and data["error"]["code"] == "conversation_deleted"
    assert data["status"] == 404
    thread = thread_config(str(deleting_conversation.pk))
    assert get_checkpointer().get_tuple(thread) is None
