from __future__ import annotations

import pytest
from django.test import Client

from knowledge.models import Chunk, Document

pytestmark = pytest.mark.django_db

URL = "/admin/knowledge/document/"


@pytest.fixture
def admin_client(make_user) -> Client:
    make_user("root", staff=True, password="pw-for-tests")
    client = Client()
    assert client.login(username="root", password="pw-for-tests")
    return client


@pytest.fixture
def documents(api_client, upload) -> dict[str, str]:
    texts = {
        "kayak": "Paddle the kayak across the calm lake.",
        "tax": "File the annual income tax return by April.",
    }
    return {
        name: upload(api_client, f"{name}.txt", text).json()["id"] for name, text in texts.items()
    }


def test_the_changelist_shows_status_and_chunk_counts(admin_client, documents):
    response = admin_client.get(URL)

    assert response.status_code == 200
    rows = response.context["cl"].result_list
    assert {(doc.title, doc.status, doc._chunks) for doc in rows} == {
        ("kayak", "processed", 1),
        ("tax", "processed", 1),
    }


def test_the_search_box_runs_a_semantic_query(admin_client, documents):
    response = admin_client.get(URL, {"q": "boating on water"})

    assert [doc.title for doc in response.context["cl"].result_list] == ["kayak"]


def test_the_semantic_search_also_matches_titles(admin_client, documents):
    response = admin_client.get(URL, {"q": "tax"})

    assert "tax" in [doc.title for doc in response.context["cl"].result_list]


def test_the_reprocess_action_rebuilds_chunks(admin_client, documents):
    before = set(Chunk.objects.values_list("id", flat=True))

    response = admin_client.post(
        URL,
        {"action": "reprocess", "_selected_action": [documents["kayak"]]},
        follow=True,
    )

    assert response.status_code == 200
    assert "Reprocess: 1 processed." in response.content.decode()
    kayak_chunks = set(
        Chunk.objects.filter(document_id=documents["kayak"]).values_list("id", flat=True)
    )
    assert kayak_chunks and not kayak_chunks & before
    assert Document.objects.get(pk=documents["kayak"]).status == "processed"


def test_the_detail_page_hides_the_bytes_and_documents_cannot_be_added(admin_client, documents):
    detail = admin_client.get(f"{URL}{documents['tax']}/change/")

    assert detail.status_code == 200
    assert "source" not in detail.context["adminform"].form.fields
    assert admin_client.get(f"{URL}add/").status_code == 403


def test_the_reprocess_action_queues_documents_and_skips_busy_ones(
    admin_client, documents, settings
):
    settings.KNOWLEDGE_PROCESS_INLINE = False  # production: processing is a job
    admin_client.post(URL, {"action": "reprocess", "_selected_action": [documents["kayak"]]})

    response = admin_client.post(
        URL,
        {"action": "reprocess", "_selected_action": [documents["kayak"], documents["tax"]]},
        follow=True,
    )

    page = response.content.decode()
    assert "Reprocess: 1 queued for processing, 1 skipped (already queued or processing)." in page
    assert set(Document.objects.values_list("status", flat=True)) == {"pending"}


GARDEN = """# Gardening

Tomatoes need full sun and regular watering.

## Pests

Aphids gather on the underside of leaves.

# Cooking

Roast the tomatoes with olive oil.
"""


def test_a_documents_chunks_are_listed_in_order_and_read_only(admin_client, api_client, upload):
    doc = upload(api_client, "garden.md", GARDEN).json()

    changelist = admin_client.get(URL)
    link = f"/admin/knowledge/chunk/?document__id__exact={doc['id']}"
    assert link in changelist.content.decode()
    chunks = admin_client.get(link)

    assert chunks.status_code == 200
    rows = chunks.context["cl"].result_list
    assert [(c.position, c.section) for c in rows] == [
        (0, "Gardening"),
        (1, "Gardening > Pests"),
        (2, "Cooking"),
    ]
    detail = admin_client.get(f"/admin/knowledge/chunk/{rows[0].pk}/change/")
    assert detail.status_code == 200
    assert "Tomatoes need full sun" in detail.content.decode()
    assert not detail.context["has_change_permission"]
    assert admin_client.get("/admin/knowledge/chunk/add/").status_code == 403
