"""Uploads are processed by a document_processing job on a real worker path."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from jobs.models import Job, JobStatus
from jobs.worker import run_next_job
from knowledge.models import Document

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _process_uploads_inline(settings) -> None:  # overrides the package fixture: use jobs
    settings.KNOWLEDGE_PROCESS_INLINE = False


def upload(client, name: str, body: bytes):
    return client.post(
        "/api/v1/documents/", {"file": SimpleUploadedFile(name, body)}, format="multipart"
    )


def test_an_upload_is_queued_then_processed_by_a_worker(api_client, user):
    response = upload(
        api_client, "bees.md", b"# Bees\n\nHoney bees keep the hive warm in winter.\n"
    )

    assert response.status_code == 202
    assert response.json()["status"] == "pending"
    job = Job.objects.get(handler="document_processing")
    assert job.priority == "high" and job.owner == user

    assert run_next_job() == JobStatus.SUCCEEDED

    document = Document.objects.get(pk=response.json()["id"])
    assert document.status == "processed" and document.chunks.count() >= 1
    job.refresh_from_db()
    assert job.result["status"] == "processed"
    hits = api_client.post("/api/v1/knowledge/search/", {"query": "warm hive"}, format="json")
    assert hits.json()["results"][0]["document"]["id"] == str(document.pk)


def test_a_retry_after_a_crash_mid_processing_finishes_the_document(api_client):
    document_id = upload(api_client, "notes.txt", b"Lavender flowers feed the bees.").json()["id"]
    # What a worker killed mid-way leaves: the document claimed, the job back to pending
    # for its second attempt (the chunks' transaction never committed).
    Document.objects.filter(pk=document_id).update(status="processing")
    Job.objects.filter(handler="document_processing").update(attempts=1)

    assert run_next_job() == JobStatus.SUCCEEDED

    assert Document.objects.get(pk=document_id).status == "processed"
