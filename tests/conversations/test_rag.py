"""Conversations that answer from the owner's knowledge base, with citations."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from conversations.models import Conversation, Message
from conversations.providers import NO_MODEL_TEXT, PASSAGES_INTRO

pytestmark = pytest.mark.django_db

BEES = (
    "# Beekeeping\n\nIn winter, honey bees cluster in the hive and shiver their flight muscles "
    "to keep the queen warm. A strong colony needs about twenty kilograms of honey to survive "
    "until spring."
)
ROCKETS = "# Rockets\n\nA rocket engine burns propellant and expels exhaust to produce thrust."


@pytest.fixture(autouse=True)
def _inline_processing(settings) -> None:
    settings.KNOWLEDGE_PROCESS_INLINE = True


def upload(client, name: str, text: str) -> str:
    response = client.post(
        "/api/v1/documents/", {"file": SimpleUploadedFile(name, text.encode())}, format="multipart"
    )
    assert response.json()["status"] == "processed", response.json()
    return response.json()["id"]


def test_new_conversations_use_the_knowledge_base_by_default(api_client):
    body = api_client.post("/api/v1/conversations/", {"title": "x"}, format="json").json()

    assert body["workflow"] == "rag"


def test_the_local_provider_answers_from_the_owners_passages_with_citations(api_client, user, send):
    bees = upload(api_client, "bees.md", BEES)
    upload(api_client, "rockets.md", ROCKETS)
    conversation = Conversation.objects.create(owner=user, model="local", workflow="rag")

    reply = send(conversation, "How do bees stay warm in winter?").json()["assistant_message"]

    assert reply["content"].startswith(PASSAGES_INTRO)
    assert "[1] " in reply["content"] and "shiver their flight muscles" in reply["content"]
    first = reply["metadata"]["sources"][0]
    assert first["n"] == 1 and first["document_id"] == bees and first["title"] == "bees"
    assert {"chunk_id", "score"} <= set(first)


def test_other_users_documents_are_never_cited(api_client, other_client, user, send):
    upload(other_client, "bees.md", BEES)
    conversation = Conversation.objects.create(owner=user, model="local", workflow="rag")

    reply = send(conversation, "How do bees stay warm in winter?").json()["assistant_message"]

    assert reply["content"] == NO_MODEL_TEXT
    assert reply["metadata"]["sources"] == []


def test_a_staff_members_conversation_reads_only_their_own_documents(
    api_client, staff_client, staff_user, send
):
    upload(api_client, "bees.md", BEES)  # alice's
    conversation = Conversation.objects.create(owner=staff_user, model="local", workflow="rag")

    reply = send(conversation, "How do bees stay warm?", client=staff_client).json()

    assert reply["assistant_message"]["metadata"]["sources"] == []


def test_a_language_model_gets_the_numbered_sources(api_client, user, send, openai_server):
    upload(api_client, "bees.md", BEES)
    conversation = Conversation.objects.create(
        owner=user, model="openai:test-model", workflow="rag"
    )

    send(conversation, "How much honey does a colony need?")

    system = openai_server.requests[-1]["messages"][0]["content"]
    assert (
        "citing them like [1]" in system and "[1] (bees)" in system and "twenty kilograms" in system
    )
    reply = Message.objects.get(conversation=conversation, role="assistant")
    assert reply.metadata["sources"][0]["title"] == "bees"


def test_the_basic_workflow_does_not_retrieve(api_client, user, send):
    upload(api_client, "bees.md", BEES)
    conversation = Conversation.objects.create(owner=user, model="local", workflow="basic")

    reply = send(conversation, "How do bees stay warm in winter?").json()["assistant_message"]

    assert reply["content"] == NO_MODEL_TEXT and "sources" not in reply["metadata"]
