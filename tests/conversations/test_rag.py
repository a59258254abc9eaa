"""Conversations that answer from the owner's knowledge base, with citations."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from conversations.models import Conversation, Message
from conversations.providers import NO_MODEL_TEXT, PASSAGES_INTRO
from knowledge.models import Chunk

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


# A document whose last sections rank among the k best for any question about it, but
# answer none: the model should not be handed them.
BEES_WITH_BACK_MATTER = (
    "# Beekeeping\n\n## Winter\n\nIn winter, honey bees cluster in the hive and shiver their "
    "flight muscles to keep the queen warm. The cluster tightens as the air gets colder.\n\n"
    "## References\n\nSmith, J. (2019). Small-scale farming. Green Press, pp. 12-40. Doe, A. "
    "(2021). Notes on rural life. Field Books. Retrieved 3 March 2022.\n\n"
    "## Postscript\n\nP.S. Many thanks to my neighbour Tom for lending me his ladder last "
    "summer, and to everyone who came to the open day. See you all next year!"
)


def test_passages_below_the_relevance_floor_are_not_given_to_the_model(
    api_client, user, send, openai_server, settings
):
    upload(api_client, "bees.md", BEES_WITH_BACK_MATTER)
    conversation = Conversation.objects.create(
        owner=user, model="openai:test-model", workflow="rag"
    )

    send(conversation, "How do bees stay warm in winter?")

    system = openai_server.requests[-1]["messages"][0]["content"]
    assert "shiver their flight muscles" in system
    assert "Smith, J." not in system and "P.S." not in system
    sources = Message.objects.get(conversation=conversation, role="assistant").metadata["sources"]
    assert len(sources) == 1
    assert "shiver" in Chunk.objects.get(pk=sources[0]["chunk_id"]).content
    assert all(s["similarity"] >= settings.CHATTER_RAG_RELEVANCE_FLOOR for s in sources)


def test_a_conversation_sets_its_own_relevance_floor(api_client, user, send):
    upload(api_client, "bees.md", BEES_WITH_BACK_MATTER)
    created = api_client.post(
        "/api/v1/conversations/",
        {"title": "bees", "model": "local", "relevance_floor": 0},
        format="json",
    )
    assert created.status_code == 201, created.json()
    assert created.json()["relevance_floor"] == 0
    conversation = Conversation.objects.get(pk=created.json()["id"])

    everything = send(conversation, "How do bees stay warm in winter?").json()
    assert len(everything["assistant_message"]["metadata"]["sources"]) == 3

    strict = api_client.patch(
        f"/api/v1/conversations/{conversation.pk}/", {"relevance_floor": 0.95}, format="json"
    )
    assert strict.status_code == 200 and strict.json()["relevance_floor"] == 0.95
    nothing = send(conversation, "How do bees stay warm in winter?").json()
    assert nothing["assistant_message"]["metadata"]["sources"] == []

    refused = api_client.patch(
        f"/api/v1/conversations/{conversation.pk}/", {"relevance_floor": 1.5}, format="json"
    )
    assert refused.status_code == 400
    assert "relevance_floor" in refused.json()["error"]["details"]
