from __future__ import annotations

import json

import pytest

from accounts.models import AuditLog
from jobs.models import Job
from knowledge.models import Chunk, Document
from knowledge.services import document_process, document_reprocess
from tests.knowledge.conftest import make_docx, make_pdf, make_zip_bomb_docx

pytestmark = pytest.mark.django_db

MARKDOWN = """# Gardening

Tomatoes need full sun and regular watering.

## Pests

Aphids gather on the underside of leaves; wash them off with soapy water.

# Cooking

Roast the tomatoes with olive oil and garlic for forty minutes.
"""


def test_it_uploads_markdown_and_splits_it_along_its_headings(api_client, upload, user):
    response = upload(api_client, "garden.md", MARKDOWN, metadata='{"topic": "garden"}')

    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["status"] == "processed"
    assert body["progress"] == 100
    assert body["content_type"] == "text/markdown"
    assert body["title"] == "garden"
    assert body["metadata"] == {"topic": "garden"}
    assert body["size"] == len(MARKDOWN.encode())
    assert body["embedding_space"] == "local:all-MiniLM-L6-v2"
    assert body["chunk_count"] == 3
    chunks = api_client.get(f"/api/v1/documents/{body['id']}/chunks/").json()
    assert chunks["count"] == 3
    sections = [chunk["section"] for chunk in chunks["results"]]
    assert sections == ["Gardening", "Gardening > Pests", "Cooking"]
    first = chunks["results"][0]
    assert first["position"] == 0
    assert first["content"].startswith("Gardening\n\nTomatoes need full sun")
    assert first["token_count"] > 5
    assert len(first["content_hash"]) == 64
    stored = Chunk.objects.get(pk=first["id"])
    assert len(stored.embedding) == 384
    assert AuditLog.objects.filter(action="document.uploaded", actor=user).count() == 1


def test_it_lists_and_shows_only_the_callers_documents(api_client, other_client, upload):
    mine = upload(api_client, "mine.txt", "My notes about sailing.").json()
    upload(other_client, "theirs.txt", "Their notes about skiing.")

    listing = api_client.get("/api/v1/documents/").json()

    assert [doc["id"] for doc in listing["results"]] == [mine["id"]]
    assert api_client.get(f"/api/v1/documents/{mine['id']}/").json()["title"] == "mine"


def test_another_users_document_id_gives_404_everywhere(api_client, other_client, upload):
    theirs = upload(other_client, "theirs.txt", "Private notes about taxes.").json()
    base = f"/api/v1/documents/{theirs['id']}/"

    for url in (base, base + "chunks/", base + "similar/"):
        response = api_client.get(url)
        assert response.status_code == 404, url
        assert response.json()["error"]["code"] == "not_found"
    assert api_client.delete(base).status_code == 404
    assert Document.objects.filter(pk=theirs["id"]).exists()


def test_staff_see_everyones_documents(staff_client, api_client, upload):
    doc = upload(api_client, "a.txt", "Staff can read this.").json()

    assert staff_client.get(f"/api/v1/documents/{doc['id']}/").status_code == 200


def test_deleting_a_document_deletes_its_chunks(api_client, upload):
    doc = upload(api_client, "a.txt", "Something to delete. " * 100).json()
    assert Chunk.objects.filter(document_id=doc["id"]).exists()

    assert api_client.delete(f"/api/v1/documents/{doc['id']}/").status_code == 204

    assert not Chunk.objects.filter(document_id=doc["id"]).exists()
    assert api_client.get(f"/api/v1/documents/{doc['id']}/").status_code == 404


def test_a_duplicate_upload_returns_the_existing_document(api_client, other_client, upload):
    first = upload(api_client, "notes.txt", "The same bytes twice.")
    again = upload(api_client, "renamed.txt", "The same bytes twice.")
    someone_else = upload(other_client, "notes.txt", "The same bytes twice.")

    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert someone_else.status_code == 202  # duplicates are per owner
    assert someone_else.json()["id"] != first.json()["id"]


def test_an_oversized_upload_gets_413_in_the_envelope(api_client, upload, settings):
    settings.KNOWLEDGE_MAX_UPLOAD_BYTES = 1000

    response = upload(api_client, "big.txt", "x" * 1001)

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "file_too_large"
    assert response.json()["error"]["details"] == {"size": 1001, "limit": 1000}
    assert not Document.objects.exists()


def test_a_request_body_over_the_limit_is_refused_before_it_is_read(api_client, settings):
    settings.KNOWLEDGE_MAX_UPLOAD_BYTES = 1000

    response = api_client.post(
        "/api/v1/documents/",
        data=b"--x\r\n" + b"a" * (2 * 1024 * 1024),
        content_type="multipart/form-data; boundary=x",
    )

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "file_too_large"


@pytest.mark.parametrize(
    ("name", "data", "status", "code"),
    [
        ("empty.txt", b"", 422, "empty_file"),
        ("blank.md", b"  \n\n ", 422, "empty_file"),
        ("photo.txt", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, 415, "binary_file"),
        ("data.txt", b"hello\x00\x01\x02world" * 50, 415, "binary_file"),
        ("report.pdf", b"plain text pretending to be a PDF", 415, "content_mismatch"),
        ("report.docx", b"plain text pretending to be a docx", 415, "content_mismatch"),
        ("notes.txt", make_pdf(["a pdf named .txt"]), 415, "content_mismatch"),
        ("broken.pdf", b"%PDF-1.4\n1 0 obj garbage\n%%EOF", 422, "malformed_file"),
        ("broken.json", b'{"a": 1,,}', 422, "malformed_file"),
        ("program.exe", b"some text", 415, "unsupported_type"),
        ("archive.docx", b"PK\x03\x04" + b"\0" * 100, 422, "malformed_file"),
        ("deep.json", b"[" * 10_000 + b"]" * 10_000, 422, "json_too_deep"),
        ("deep", b'{"a":' * 10_000 + b"1" + b"}" * 10_000, 422, "json_too_deep"),
        # UTF-8 with a stray byte: guessing another encoding would index mojibake.
        ("broken.txt", "Café crème, déjà vu. ".encode() * 20 + b"\xff", 422, "invalid_utf8"),
    ],
)
def test_it_refuses_bad_files_up_front(api_client, upload, name, data, status, code):
    response = upload(api_client, name, data)

    assert response.status_code == status, response.json()
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    assert not Document.objects.exists()


# Russian in two legacy encodings and French in cp1252: the text a reader sees, not mojibake.
RUSSIAN = (
    "Пчёлы зимой собираются в клуб и согревают матку, дрожа летательными мышцами. "
    "Сильной семье нужно около двадцати килограммов мёда, чтобы дожить до весны."
)
FRENCH = "Les abeilles se regroupent en hiver et réchauffent la reine. Un été très chaud."


@pytest.mark.parametrize(
    ("text", "encoding"), [(RUSSIAN, "cp1251"), (RUSSIAN, "koi8_r"), (FRENCH, "cp1252")]
)
def test_text_in_a_legacy_encoding_is_decoded_correctly(api_client, upload, text, encoding):
    doc = upload(api_client, f"{encoding}.txt", text.encode(encoding)).json()

    assert doc["status"] == "processed", doc
    assert Chunk.objects.get(document_id=doc["id"]).content == text


def test_it_refuses_an_encrypted_pdf(api_client, upload):
    response = upload(api_client, "secret.pdf", make_pdf(["classified"], password="hunter2"))

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "encrypted_file"


def test_it_refuses_a_zip_bomb_docx(api_client, upload):
    bomb = make_zip_bomb_docx()
    assert len(bomb) < 1024 * 1024

    response = upload(api_client, "bomb.docx", bomb)

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "zip_bomb"


def test_a_plain_zip_is_not_a_docx(api_client, upload):
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("readme.txt", "hi")

    response = upload(api_client, "archive.docx", out.getvalue())

    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_type"


def test_metadata_must_be_a_json_object(api_client, upload):
    for bad in ("not json", "[1, 2]"):
        response = upload(api_client, "a.txt", "text", metadata=bad)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "validation_error"
        assert "metadata" in response.json()["error"]["details"]


def test_a_pdf_is_split_by_page(api_client, upload):
    pdf = make_pdf(["Page one is about volcanoes.", "Page two is about glaciers."])

    doc = upload(api_client, "earth.pdf", pdf).json()

    assert doc["status"] == "processed"
    assert doc["content_type"] == "application/pdf"
    chunks = api_client.get(f"/api/v1/documents/{doc['id']}/chunks/").json()["results"]
    assert [(c["page"], c["content"]) for c in chunks] == [
        (1, "Page one is about volcanoes."),
        (2, "Page two is about glaciers."),
    ]


def test_nul_characters_from_a_pdf_are_dropped_not_fatal(api_client, upload):
    doc = upload(api_client, "nul.pdf", make_pdf(["NUL\x00 inside a PDF string"])).json()

    assert doc["status"] == "processed", doc
    chunks = api_client.get(f"/api/v1/documents/{doc['id']}/chunks/").json()["results"]
    assert chunks[0]["content"] == "NUL inside a PDF string"


def test_a_pdf_without_text_is_marked_failed_with_a_reason(api_client, upload):
    response = upload(api_client, "scan.pdf", make_pdf([""]))

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "failed"
    assert "no extractable text" in body["failure_reason"]
    assert body["chunk_count"] == 0


def test_a_docx_keeps_its_headings_as_sections(api_client, upload):
    data = make_docx(
        [
            ("h1", "Onboarding"),
            ("p", "New hires get a laptop on day one."),
            ("h2", "Security"),
            ("p", "Enable two-factor authentication before reading email."),
        ]
    )

    doc = upload(api_client, "handbook.docx", data).json()

    assert doc["content_type"].endswith("wordprocessingml.document")
    chunks = api_client.get(f"/api/v1/documents/{doc['id']}/chunks/").json()["results"]
    assert [c["section"] for c in chunks] == ["Onboarding", "Onboarding > Security"]
    assert "two-factor" in chunks[1]["content"]


def test_html_is_read_as_text_without_scripts(api_client, upload):
    page = (
        "<!doctype html><html><head><title>T</title><script>alert('x')</script></head>"
        "<body><h1>Billing</h1><p>Invoices are sent <b>monthly</b>.</p>"
        "<style>p {color: red}</style></body></html>"
    )

    doc = upload(api_client, "billing.html", page).json()

    chunks = api_client.get(f"/api/v1/documents/{doc['id']}/chunks/").json()["results"]
    assert doc["content_type"] == "text/html"
    assert len(chunks) == 1
    assert chunks[0]["section"] == "Billing"
    assert "Invoices are sent" in chunks[0]["content"]
    assert "monthly" in chunks[0]["content"]
    assert "alert" not in chunks[0]["content"] and "color" not in chunks[0]["content"]


def test_csv_rows_keep_their_column_names(api_client, upload):
    doc = upload(api_client, "people.csv", "name,city\nAda,London\nGrace,Arlington\n").json()

    chunks = api_client.get(f"/api/v1/documents/{doc['id']}/chunks/").json()["results"]
    assert doc["content_type"] == "text/csv"
    assert chunks[0]["content"] == "name: Ada; city: London\nname: Grace; city: Arlington"


def test_json_is_typed_by_content_and_flattened(api_client, upload):
    data = json.dumps({"product": {"name": "Widget", "tags": ["blue", "small"]}})

    doc = upload(api_client, "export", data).json()

    chunks = api_client.get(f"/api/v1/documents/{doc['id']}/chunks/").json()["results"]
    assert doc["content_type"] == "application/json"
    assert chunks[0]["content"] == (
        "product.name: Widget\nproduct.tags[0]: blue\nproduct.tags[1]: small"
    )


def test_a_parser_crash_marks_the_document_failed_instead_of_raising(
    api_client, upload, monkeypatch
):
    def explode(data, content_type):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr("knowledge.services.extract_text", explode)

    response = upload(api_client, "deep.txt", "anything")

    assert response.status_code == 202
    assert response.json()["status"] == "failed"
    assert "RecursionError" in response.json()["failure_reason"]


def test_processing_twice_does_nothing_and_reprocessing_rebuilds(api_client, upload, user):
    doc = upload(api_client, "a.md", MARKDOWN).json()
    chunk_ids = set(Chunk.objects.filter(document_id=doc["id"]).values_list("id", flat=True))

    again = document_process(document_id=doc["id"])
    assert again.status == "processed"
    assert set(Chunk.objects.filter(document_id=doc["id"]).values_list("id", flat=True)) == (
        chunk_ids
    )

    rebuilt = document_reprocess(document=Document.objects.get(pk=doc["id"]), actor=user)
    new_ids = set(Chunk.objects.filter(document_id=doc["id"]).values_list("id", flat=True))
    assert rebuilt.status == "processed"
    assert len(new_ids) == len(chunk_ids) and not new_ids & chunk_ids


def test_uploads_need_a_key_with_write_scope(client_for, user, anon_client, upload):
    reader = client_for(user, scopes=["read"])

    assert upload(reader, "a.txt", "text").status_code == 403
    assert upload(anon_client, "a.txt", "text").status_code == 401


def test_an_upload_must_be_multipart_with_a_file(api_client):
    as_json = api_client.post("/api/v1/documents/", {"file": "x"}, format="json")
    no_file = api_client.post("/api/v1/documents/", {"metadata": "{}"}, format="multipart")

    assert as_json.status_code == 415
    assert as_json.json()["error"]["code"] == "unsupported_media_type"
    assert no_file.status_code == 400
    assert "file" in no_file.json()["error"]["details"]


# --- PDF decompression bombs and oversized PDFs ---------------------------------------------
# The per-stream limit is lowered so a bomb stays small in the test: 2 MiB of spaces is ~2 KB
# of Flate data; the same shape at the default limit (16 MiB) is ~16 KB.
BOMB_LIMIT = 1024 * 1024


def test_a_pdf_bomb_on_its_first_pages_is_refused_up_front(api_client, upload, settings):
    settings.KNOWLEDGE_PDF_MAX_STREAM_BYTES = BOMB_LIMIT
    bomb = make_pdf(["innocent cover page"], padding={0: 2 * BOMB_LIMIT})
    assert len(bomb) < 10_000

    response = upload(api_client, "bomb.pdf", bomb)

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "decompression_bomb"
    assert error["details"] == {"max_stream_bytes": BOMB_LIMIT}
    assert not Document.objects.exists()


def test_a_pdf_bomb_deeper_inside_fails_in_processing_with_a_reason(api_client, upload, settings):
    settings.KNOWLEDGE_PDF_MAX_STREAM_BYTES = BOMB_LIMIT
    pages = [f"page {n} about rivers" for n in range(1, 7)]
    bomb = make_pdf(pages, padding={5: 2 * BOMB_LIMIT})

    response = upload(api_client, "deep-bomb.pdf", bomb)

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "failed"
    assert "decompression bomb" in body["failure_reason"]
    assert body["chunk_count"] == 0


def test_a_stream_under_the_limit_is_read(api_client, upload, settings):
    settings.KNOWLEDGE_PDF_MAX_STREAM_BYTES = BOMB_LIMIT
    pdf = make_pdf(["padded but honest"], padding={0: BOMB_LIMIT // 2})

    body = upload(api_client, "padded.pdf", pdf).json()

    assert body["status"] == "processed", body
    assert body["chunk_count"] == 1


def test_a_pdf_with_too_many_pages_is_refused(api_client, upload, settings):
    settings.KNOWLEDGE_PDF_MAX_PAGES = 3

    response = upload(api_client, "long.pdf", make_pdf(["a", "b", "c", "d"]))

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "too_many_pages"
    assert error["details"] == {"pages": 4, "limit": 3}


def test_a_pdf_with_more_text_than_the_limit_fails_with_a_reason(api_client, upload, settings):
    settings.KNOWLEDGE_MAX_TEXT_CHARS = 5_000
    pdf = make_pdf(["tide " * 600, "surf " * 600])  # 3,000 characters a page

    body = upload(api_client, "wordy.pdf", pdf).json()

    assert body["status"] == "failed"
    assert "5,000 characters by page 2" in body["failure_reason"]


# --- Retrying a document ----------------------------------------------------------------------
def test_a_failed_document_is_reprocessed_through_the_api(api_client, upload, settings):
    settings.KNOWLEDGE_MAX_TEXT_CHARS = 5_000
    doc = upload(api_client, "wordy.pdf", make_pdf(["tide " * 600, "surf " * 600])).json()
    assert doc["status"] == "failed"
    settings.KNOWLEDGE_MAX_TEXT_CHARS = 50_000

    response = api_client.post(f"/api/v1/documents/{doc['id']}/reprocess/")

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "processed"
    assert body["failure_reason"] == ""
    assert body["chunk_count"] >= 2


def test_reprocess_is_refused_while_a_processing_job_is_active(api_client, upload, settings):
    doc = upload(api_client, "notes.txt", b"Lighthouses guide ships at night.").json()
    settings.KNOWLEDGE_PROCESS_INLINE = False  # the next run goes through the job queue

    first = api_client.post(f"/api/v1/documents/{doc['id']}/reprocess/")
    second = api_client.post(f"/api/v1/documents/{doc['id']}/reprocess/")

    assert first.status_code == 202
    assert first.json()["status"] == "pending"
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "document_busy"
    assert Job.objects.filter(handler="document_processing", status="pending").count() == 1


def test_reprocess_needs_write_scope_and_ownership(
    client_for, user, other_client, upload, api_client
):
    doc = upload(api_client, "notes.txt", b"Harbours shelter boats from storms.").json()

    reader = client_for(user, scopes=["read"])
    assert reader.post(f"/api/v1/documents/{doc['id']}/reprocess/").status_code == 403
    assert other_client.post(f"/api/v1/documents/{doc['id']}/reprocess/").status_code == 404


def raw_upload(client, filename: str, data: bytes, **fields: str):
    """A multipart body written by hand: Django's test client would strip the name's path."""
    parts = [
        f'--b\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
        for key, value in fields.items()
    ]
    parts.append(
        f'--b\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: text/plain\r\n\r\n".encode()
        + data
        + b"\r\n--b--\r\n"
    )
    return client.post(
        "/api/v1/documents/", data=b"".join(parts), content_type="multipart/form-data; boundary=b"
    )


@pytest.mark.parametrize(
    ("filename", "code"),
    [
        ("../../etc/passwd.txt", "threat_detected"),
        ("..\\..\\windows\\win.ini", "threat_detected"),
        ("notes/../../secret.txt", "threat_detected"),
        ("docs/report.txt", "invalid_filename"),
        ("C:\\Users\\ann\\report.txt", "invalid_filename"),
        ("C:report.txt", "invalid_filename"),
    ],
)
def test_an_upload_name_with_a_path_is_refused(api_client, filename, code):
    response = raw_upload(api_client, filename, b"Some harmless text.")

    assert response.status_code == 400, response.json()
    assert response.json()["error"]["code"] == code
    assert not Document.objects.exists()


def test_a_plain_upload_name_is_kept_as_sent(api_client):
    response = raw_upload(api_client, "Quarterly report (final).txt", b"Some harmless text.")

    assert response.status_code == 202, response.json()
    assert response.json()["filename"] == "Quarterly report (final).txt"


def test_the_keys_of_an_uploads_metadata_are_scanned(api_client, upload):
    for metadata in ('{"<script>x</script>": 1}', '{"ok": {"<script>alert(1)</script>": 2}}'):
        response = upload(api_client, "a.txt", "Some text.", metadata=metadata)

        assert response.status_code == 400, response.json()
        assert response.json()["error"]["code"] == "threat_detected"
    assert not Document.objects.exists()
    assert AuditLog.objects.filter(action="security.threat_refused").count() == 2


def test_upload_metadata_follows_the_platforms_metadata_rules(api_client, upload):
    response = upload(api_client, "a.txt", "Some text.", metadata='{"a b": 1}')

    assert response.status_code == 400, response.json()
    assert response.json()["error"]["code"] == "invalid_metadata"


def test_a_duplicate_is_validated_before_it_is_returned(api_client, upload):
    first = upload(api_client, "notes.txt", "The same bytes twice.")
    assert first.status_code == 202

    refused_key = upload(
        api_client, "notes.txt", "The same bytes twice.", metadata='{"<script>x</script>": 1}'
    )
    bad_key = upload(api_client, "notes.txt", "The same bytes twice.", metadata='{"a b": 1}')
    bad_name = raw_upload(api_client, "../../notes.txt", b"The same bytes twice.")

    assert refused_key.status_code == 400
    assert refused_key.json()["error"]["code"] == "threat_detected"
    assert bad_key.status_code == 400
    assert bad_name.status_code == 400
    assert Document.objects.get().metadata == {}


def test_a_duplicate_with_a_new_title_and_metadata_updates_them(api_client, upload):
    first = upload(api_client, "notes.txt", "The same bytes twice.", metadata='{"v": 1}').json()

    again = upload(
        api_client, "renamed.txt", "The same bytes twice.", metadata='{"v": 2}', title="Notes"
    )
    untouched = upload(api_client, "notes.txt", "The same bytes twice.")

    assert again.status_code == 200
    body = again.json()
    assert body["id"] == first["id"]
    assert (body["title"], body["metadata"], body["filename"]) == ("Notes", {"v": 2}, "notes.txt")
    assert untouched.json()["metadata"] == {"v": 2}  # fields not sent are kept
    assert api_client.get(f"/api/v1/documents/{first['id']}/").json()["title"] == "Notes"
    assert AuditLog.objects.filter(action="document.updated").count() == 1


def test_a_metadata_key_holding_nul_is_refused_not_a_500(api_client, upload):
    response = upload(api_client, "notes.txt", "plain text", metadata=json.dumps({"a\x00b": 1}))

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_characters"
    assert not Document.objects.exists()
