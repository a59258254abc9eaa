from __future__ import annotations

import re

import pytest

from conversations.models import Conversation

pytestmark = pytest.mark.django_db
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>\s*\S", re.IGNORECASE)


def test_api_responses_carry_the_security_headers(api_client):
    response = api_client.get("/api/v1/conversations/")

    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in response["Content-Security-Policy"]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert "camera=()" in response["Permissions-Policy"]
    assert response["X-Frame-Options"] == "DENY"
    assert "Strict-Transport-Security" not in response  # plain HTTP


@pytest.mark.parametrize("path", ["/admin/", "/admin/conversations/conversation/", "/api/docs/"])
def test_admin_and_swagger_ui_work_under_the_csp(client, staff_user, path):
    """script-src 'self' forbids inline scripts: these pages must have none."""
    client.force_login(staff_user)
    response = client.get(path)

    assert response.status_code == 200
    assert "'unsafe-inline'" not in response["Content-Security-Policy"].split("style-src")[0]
    assert not INLINE_SCRIPT.search(response.content.decode())


def test_swagger_ui_init_script_is_served_from_self(client):
    html = client.get("/api/docs/").content.decode()
    sources = re.findall(r'<script[^>]*src="([^"]+)"', html)
    assert sources and all(s.startswith("/") for s in sources)
    from django.contrib.staticfiles import finders

    for source in sources:
        if source.startswith("/static/"):
            assert finders.find(source.removeprefix("/static/"))
        else:
            response = client.get(source)
            assert response.status_code == 200
            assert response["Content-Type"].startswith("application/javascript")


def test_hsts_is_sent_behind_an_https_proxy(settings, api_client):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    response = api_client.get("/api/v1/conversations/", HTTP_X_FORWARDED_PROTO="https")

    assert response["Strict-Transport-Security"].startswith("max-age=31536000")


def test_user_text_is_escaped_in_the_admin(client, staff_user, user):
    Conversation.objects.create(owner=user, title="<img src=x onerror=alert(1)>")
    client.force_login(staff_user)

    html = client.get("/admin/conversations/conversation/").content.decode()

    assert "<img src=x onerror" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_an_oversized_body_is_a_413_envelope(settings, api_client):
    settings.CHATTER_MAX_REQUEST_BYTES = 1000
    response = api_client.post("/api/v1/conversations/", {"title": "x" * 2000}, format="json")

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_upload_routes_have_their_own_body_limit(settings):
    from web.http_policy import body_limit

    settings.CHATTER_MAX_REQUEST_BYTES = 1000
    assert body_limit("/api/v1/documents/") == settings.CHATTER_MAX_UPLOAD_BYTES
    assert body_limit("/api/v1/conversations/") == 1000


def test_cors_allows_only_listed_origins(settings, client):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]
    preflight = {
        "HTTP_ORIGIN": "https://app.example.com",
        "HTTP_ACCESS_CONTROL_REQUEST_METHOD": "POST",
        "HTTP_ACCESS_CONTROL_REQUEST_HEADERS": "authorization, content-type",
    }

    allowed = client.options("/api/v1/conversations/", **preflight)
    refused = client.options(
        "/api/v1/conversations/", **{**preflight, "HTTP_ORIGIN": "https://evil.example"}
    )

    assert allowed["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "Access-Control-Allow-Origin" not in refused
    response = client.get("/api/v1/health/", HTTP_ORIGIN="https://app.example.com")
    assert "API-Version" in response["Access-Control-Expose-Headers"]
