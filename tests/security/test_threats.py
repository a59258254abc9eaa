from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from accounts.models import AuditLog, SecurityCounter
from web.threats import assess

CORPORA = Path(__file__).parent / "corpora"


def _lines(name: str) -> list[str]:
    return [line for line in (CORPORA / name).read_text().splitlines() if line.strip()]


def test_detection_rate_on_known_attack_payloads():
    attacks = _lines("attacks.txt")
    flagged = [a for a in attacks if assess(a).score >= settings.CHATTER_THREAT_FLAG_SCORE]
    refused = [a for a in attacks if assess(a).score >= settings.CHATTER_THREAT_REFUSE_SCORE]
    rate = len(flagged) / len(attacks)
    print(
        f"\ndetection: {len(flagged)}/{len(attacks)} = {rate:.1%} flagged in free text, "
        f"{len(refused)}/{len(attacks)} = {len(refused) / len(attacks):.1%} refused in "
        "structured fields"
    )
    assert len(attacks) >= 70
    assert rate >= 0.95
    assert len(refused) == len(attacks)


def test_false_positive_rate_on_programming_questions():
    questions = _lines("questions.txt")
    flagged = [q for q in questions if assess(q).score >= settings.CHATTER_THREAT_FLAG_SCORE]
    rate = len(flagged) / len(questions)
    print(f"\nfalse positives: {len(flagged)}/{len(questions)} = {rate:.1%}", flagged)
    assert len(questions) >= 70
    assert rate <= 0.03


def test_each_kind_is_named():
    assert assess("' OR 1=1 --").kinds[0] == "sql_injection"
    assert assess("<img src=x onerror=alert(1)>").kinds[0] == "xss"
    assert assess("../../etc/passwd").kinds[0] == "path_traversal"
    assert assess("How do I join two tables?").score == 0


@pytest.mark.django_db
def test_attacks_in_chat_content_are_flagged_not_blocked(api_client, user):
    conversation = api_client.post("/api/v1/conversations/", {}, format="json").json()
    content = "Is this safe? <script>alert(document.cookie)</script>"

    response = api_client.post(
        f"/api/v1/conversations/{conversation['id']}/messages/",
        {"content": content},
        format="json",
    )

    assert response.status_code == 201
    assert response.json()["user_message"]["content"] == content
    entry = AuditLog.objects.get(action="security.threat_flagged")
    assert entry.actor == user
    assert entry.details["findings"][0]["field"] == "content"
    assert entry.details["findings"][0]["kinds"] == ["xss"]
    assert SecurityCounter.objects.get(event="security.threat_flagged").count == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"metadata": {"../../etc/passwd": 1}}, "metadata.../../etc/passwd"),
        ({"model": "x' OR '1'='1"}, "model"),
        ({"metadata": {"source_url": "javascript:alert(1)"}}, "metadata.source_url"),
    ],
)
def test_attacks_in_structured_fields_are_refused(api_client, body, field):
    response = api_client.post("/api/v1/conversations/", body, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "threat_detected"
    assert field in error["details"]
    assert AuditLog.objects.filter(action="security.threat_refused").count() == 1


@pytest.mark.django_db
def test_uploaded_file_names_and_query_names_are_structured(api_client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    # Django already drops directories from upload names; markup survives it.
    upload = SimpleUploadedFile("<svg onload=alert(1)>.pdf", b"x")
    response = api_client.post("/api/v1/conversations/", {"file": upload}, format="multipart")
    assert response.status_code == 400
    assert "file.filename" in response.json()["error"]["details"]

    response = api_client.get("/api/v1/conversations/", {"q": "' OR 1=1 --"})
    assert response.status_code == 200  # a search query is free text
    response = api_client.get("/api/v1/conversations/", {"<script>alert(1)</script>": "1"})
    assert response.status_code == 400


@pytest.mark.django_db
def test_the_counter_is_readable_in_the_admin(api_client, staff_user, client):
    api_client.post("/api/v1/conversations/", {"metadata": {"../x/../../y": 1}}, format="json")
    client.force_login(staff_user)

    response = client.get("/admin/accounts/securitycounter/")

    assert response.status_code == 200
    assert "security.threat_refused" in response.content.decode()


# Under ASGI (uvicorn), JSON and query strings are scanned on the event loop and only the
# findings' records go to a thread; forms and uploads are parsed in a thread. The same
# refusals and records, through Django's ASGI handler:
@pytest.mark.django_db(transaction=True)
def test_under_asgi_structured_attacks_are_refused_and_recorded(user, client_for):
    from asgiref.sync import async_to_sync
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test import AsyncClient

    auth = {"Authorization": f"Bearer {client_for(user).raw_key}"}
    client = AsyncClient()

    async def attacks():
        upload = SimpleUploadedFile("<svg onload=alert(1)>.pdf", b"x")
        return (
            await client.post(
                "/api/v1/conversations/",
                {"model": "x' OR '1'='1"},
                content_type="application/json",
                headers=auth,
            ),
            await client.get(
                "/api/v1/conversations/", {"<script>alert(1)</script>": "1"}, headers=auth
            ),
            await client.post("/api/v1/documents/", {"file": upload}, headers=auth),
        )

    json_attack, query_attack, upload_attack = async_to_sync(attacks)()

    assert json_attack.status_code == 400
    assert json_attack.json()["error"]["details"].keys() == {"model"}
    assert query_attack.status_code == 400
    assert upload_attack.status_code == 400
    assert "file.filename" in upload_attack.json()["error"]["details"]
    refused = AuditLog.objects.filter(action="security.threat_refused").select_related("actor")
    assert [entry.actor for entry in refused] == [user, user, user]


@pytest.mark.django_db(transaction=True)
def test_under_asgi_free_text_attacks_are_flagged_and_pass(user, api_client):
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    conversation = api_client.post("/api/v1/conversations/", {}, format="json").json()
    auth = {"Authorization": f"Bearer {api_client.raw_key}"}

    response = async_to_sync(AsyncClient().post)(
        f"/api/v1/conversations/{conversation['id']}/messages/",
        {"content": "Is this safe? <script>alert(document.cookie)</script>"},
        content_type="application/json",
        headers=auth,
    )

    assert response.status_code == 201
    assert SecurityCounter.objects.get(event="security.threat_flagged").count == 1
    assert AuditLog.objects.get(action="security.threat_flagged").actor == user


@pytest.mark.parametrize("encoding", ["multipart", "urlencoded"])
def test_put_and_patch_forms_are_scanned_like_post_ones(api_client, encoding):
    # Django parses form bodies for POST only; DRF parses PUT/PATCH forms itself.
    from urllib.parse import urlencode

    conversation = api_client.post("/api/v1/conversations/", {"title": "t"}, format="json").json()
    url = f"/api/v1/conversations/{conversation['id']}/"

    def patch(data):
        if encoding == "multipart":
            return api_client.patch(url, data, format="multipart")
        return api_client.generic(
            "PATCH", url, urlencode(data), content_type="application/x-www-form-urlencoded"
        )

    nul = patch({"system_prompt": "be\x00nice"})
    attack = patch({"model": "x' OR '1'='1"})
    fine = patch({"title": "renamed"})

    assert nul.status_code == 400 and nul.json()["error"]["code"] == "invalid_characters"
    assert attack.status_code == 400 and attack.json()["error"]["code"] == "threat_detected"
    # A harmless form passes the scanner and reaches the view, which takes JSON only.
    assert fine.status_code == 415 and fine.json()["error"]["code"] == "unsupported_media_type"
