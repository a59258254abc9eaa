"""Uploads are processed by a document_processing job on a real worker path."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from jobs.models import Job, JobStatus
from jobs.worker import run_next_job
from knowledge.models import Document
from knowledge.parsing import extract_text
from knowledge.splitting import split_blocks

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _process_uploads_inline(settings) -> None:  # overrides the package fixture: use jobs
    settings.KNOWLEDGE_PROCESS_INLINE = False


@pytest.fixture(autouse=True)
def _close_executor_connection():
    from jobs import worker

    yield
    worker.executor_connection_close()


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


# --- cancel, delete, give up (issues 10.2 and 11.4) ----------------------------------------
LONG_TEXT = "\n\n".join(
    f"Paragraph {n}: honey bees fan their wings to cool the hive on hot days. " * 8
    for n in range(40)
).encode()


def processing_job() -> Job:
    return Job.objects.get(handler="document_processing")


@pytest.fixture
def batches(settings, monkeypatch):
    """Embed two chunks per batch and call ``batches.each(n)`` before batch n (from 1)."""
    from knowledge import embeddings

    settings.KNOWLEDGE_EMBEDDING_BATCH_SIZE = 2

    class Batches:
        count = 0
        each = staticmethod(lambda n: None)

    embedder = embeddings.active_embedder()
    original = embedder.embed_documents

    def embed_documents(texts):
        Batches.count += 1
        Batches.each(Batches.count)
        return original(texts)

    monkeypatch.setattr(embedder, "embed_documents", embed_documents)
    return Batches


def test_a_cancel_through_the_api_stops_processing_between_batches(api_client, batches):
    document_id = upload(api_client, "long.txt", LONG_TEXT).json()["id"]
    job_id = processing_job().pk

    def cancel_on_second_batch(n: int) -> None:
        if n == 2:
            assert api_client.post(f"/api/v1/jobs/{job_id}/cancel/").status_code == 200

    batches.each = cancel_on_second_batch

    assert run_next_job() == JobStatus.CANCELLED

    job = Job.objects.get(pk=job_id)
    assert job.status == JobStatus.CANCELLED and job.attempts == 1
    assert batches.count == 2  # it stopped at the first check after the cancel
    document = Document.objects.get(pk=document_id)
    assert document.status == "failed" and "cancelled" in document.failure_reason
    assert document.chunks.count() == 0
    assert run_next_job() is None  # never retried


def test_the_jobs_progress_is_the_documents_progress(api_client, batches):
    document_id = upload(api_client, "long.txt", LONG_TEXT).json()["id"]
    seen: list[tuple[int, int]] = []

    def record(n: int) -> None:
        job = processing_job()
        seen.append((job.progress, Document.objects.get(pk=document_id).progress))

    batches.each = record

    assert run_next_job() == JobStatus.SUCCEEDED

    assert len(seen) > 3
    assert all(job == document for job, document in seen), seen
    assert [job for job, _ in seen] == sorted(job for job, _ in seen) and seen[-1][0] > 10


def test_deleting_a_document_cancels_its_waiting_job(api_client):
    document_id = upload(api_client, "notes.txt", b"Lavender flowers feed the bees.").json()["id"]

    assert api_client.delete(f"/api/v1/documents/{document_id}/").status_code == 204

    assert processing_job().status == JobStatus.CANCELLED
    assert run_next_job() is None


def test_deleting_a_document_while_it_is_processed_ends_its_job_cancelled(api_client, batches):
    document_id = upload(api_client, "long.txt", LONG_TEXT).json()["id"]

    def delete_on_second_batch(n: int) -> None:
        if n == 2:
            assert api_client.delete(f"/api/v1/documents/{document_id}/").status_code == 204

    batches.each = delete_on_second_batch

    assert run_next_job() == JobStatus.CANCELLED

    job = processing_job()
    assert job.status == JobStatus.CANCELLED and job.attempts == 1 and batches.count == 2
    assert not Document.objects.filter(pk=document_id).exists()
    assert run_next_job() is None


def test_a_job_whose_document_is_gone_ends_cancelled_not_succeeded(api_client):
    document_id = upload(api_client, "notes.txt", b"Lavender flowers feed the bees.").json()["id"]
    Document.objects.filter(pk=document_id).delete()  # gone without the service (a cascade)

    assert run_next_job() == JobStatus.CANCELLED
    assert "deleted" in processing_job().error


def test_a_cancelled_pending_processing_job_leaves_the_document_failed(api_client):
    document_id = upload(api_client, "notes.txt", b"Lavender flowers feed the bees.").json()["id"]

    assert api_client.post(f"/api/v1/jobs/{processing_job().pk}/cancel/").status_code == 200

    document = Document.objects.get(pk=document_id)
    assert document.status == "failed" and document.failure_reason.startswith(
        "Processing was cancelled"
    )


def test_a_timeout_on_the_last_attempt_leaves_the_document_failed_with_the_reason(
    api_client, batches
):
    from jobs.registry import JobTimeout

    document_id = upload(api_client, "long.txt", LONG_TEXT).json()["id"]
    Job.objects.filter(handler="document_processing").update(attempts=2)  # next is the last

    def time_out(n: int) -> None:
        if n == 3:
            raise JobTimeout("exceeded its timeout of 900 s")

    batches.each = time_out

    assert run_next_job() == JobStatus.DEAD

    document = Document.objects.get(pk=document_id)
    assert document.status == "failed"
    assert "JobTimeout: exceeded its timeout of 900 s" in document.failure_reason


def test_a_job_the_clock_buries_leaves_the_document_failed_with_the_reason(api_client):
    from jobs.clock import jobs_reap

    document_id = upload(api_client, "long.txt", LONG_TEXT).json()["id"]
    # What a worker SIGKILLed at its timeout on the last attempt leaves: the job running with
    # no live lock holder, the document processing at 40%.
    Job.objects.filter(handler="document_processing").update(
        status=JobStatus.RUNNING,
        attempts=3,
        started_at=timezone.now() - timedelta(seconds=2000),
    )
    Document.objects.filter(pk=document_id).update(status="processing", progress=40)

    assert jobs_reap()["reaped"] == 1

    assert processing_job().status == JobStatus.DEAD
    document = Document.objects.get(pk=document_id)
    assert document.status == "failed" and "JobTimeout" in document.failure_reason


def test_once_split_the_processing_job_extends_its_budget_to_its_chunks(api_client, settings):
    from jobs.services import max_timeout_seconds
    from knowledge.services import processing_remaining_seconds

    chunks = len(split_blocks(extract_text(LONG_TEXT, "text/plain"), "text/plain"))
    # A rate at which those chunks need more than the longest budget a size can get.
    settings.KNOWLEDGE_MIN_CHUNKS_PER_SECOND = chunks / (2 * max_timeout_seconds())
    document_id = upload(api_client, "long.txt", LONG_TEXT).json()["id"]
    assert processing_job().timeout_seconds == max_timeout_seconds()

    assert run_next_job() == JobStatus.SUCCEEDED

    assert Document.objects.get(pk=document_id).chunks.count() == chunks
    assert processing_job().timeout_seconds >= processing_remaining_seconds(chunks)


def test_the_processing_budget_grows_with_the_document(api_client, settings):
    from knowledge.services import processing_timeout_seconds

    upload(api_client, "notes.txt", b"Lavender flowers feed the bees.")

    assert processing_job().timeout_seconds == processing_timeout_seconds(31) == 300
    at_limit = processing_timeout_seconds(settings.KNOWLEDGE_MAX_UPLOAD_BYTES)
    assert processing_timeout_seconds(2 * 1024 * 1024) < at_limit <= 3600
