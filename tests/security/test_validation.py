from __future__ import annotations

import pytest

from core import validation as v

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "name",
    [
        "../etc/passwd",
        "a/b.txt",
        "..\\win.ini",
        "x\x00.pdf",
        "line\nbreak.txt",
        "..",
        "CON.txt",
        "",
    ],
)
def test_it_rejects_traversal_and_control_characters_in_filenames(name):
    with pytest.raises(v.InvalidInput):
        v.validate_filename(name)


def test_it_normalizes_filenames_to_nfc():
    assert v.validate_filename("cafe\u0301.txt") == "caf\u00e9.txt"


def test_it_strips_controls_and_composes_unicode_in_structured_text():
    assert v.normalize_line("a\x00b\u200b\x1bc") == "ab\u200bc"
    assert v.validate_text("Line 1\nLine\x07 2\te\u0301") == "Line 1\nLine 2\t\u00e9"


def test_message_content_is_never_altered(settings):
    settings.CHATTER_MAX_MESSAGE_CHARS = 50
    content = "  SELECT * FROM t;\n<b>e\u0301</b>\x1b  "
    assert v.validate_message_content(content) == content
    with pytest.raises(v.InvalidInput):
        v.validate_message_content("x" * 51)
    with pytest.raises(v.InvalidInput):
        v.validate_message_content(" \n ")


def test_json_depth_and_size_are_bounded():
    deep: object = 1
    for _ in range(v.MAX_JSON_DEPTH + 1):
        deep = [deep]
    with pytest.raises(v.InvalidInput, match="deeper"):
        v.validate_json(deep)
    with pytest.raises(v.InvalidInput, match="bytes"):
        v.validate_json({"a": "x" * (v.MAX_JSON_BYTES + 1)})


@pytest.mark.parametrize(
    "metadata",
    [
        {"../x": 1},
        {"a b": 1},
        {"": 1},
        {"k": {"a": {"b": {"c": 1}}}},
        {f"k{i}": i for i in range(v.MAX_METADATA_KEYS + 1)},
        {"k": "x" * (v.MAX_METADATA_STRING + 1)},
        ["not", "an", "object"],
    ],
)
def test_it_rejects_bad_metadata(metadata):
    with pytest.raises(v.InvalidInput):
        v.validate_metadata(metadata)


def test_violations_are_a_400_envelope_naming_each_field(api_client):
    response = api_client.post(
        "/api/v1/conversations/",
        {"title": "x" * 301, "metadata": {"bad key": 1}},
        format="json",
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert set(error["details"]) == {"title", "metadata"}


def test_structured_fields_are_stored_normalized(api_client):
    response = api_client.post(
        "/api/v1/conversations/",
        {"title": "Caf\u0065\u0301\x1b notes", "metadata": {"topic": "a\x07b"}},
        format="json",
    )

    assert response.status_code == 201, response.json()
    assert response.json()["title"] == "Caf\u00e9 notes"
    assert response.json()["metadata"] == {"topic": "ab"}


def test_ninja_schemas_use_the_same_rules(api_client, settings):
    settings.CHATTER_MAX_MESSAGE_CHARS = 10
    conversation = api_client.post("/api/v1/conversations/", {}, format="json").json()

    response = api_client.post(
        f"/api/v1/conversations/{conversation['id']}/messages/stream/",
        {"content": "x" * 11},
        format="json",
    )

    assert response.status_code == 400
    assert "content" in response.json()["error"]["details"]


def test_api_key_names_are_normalized(api_client):
    response = api_client.post("/api/v1/api-keys/", {"name": "\x00\x01"}, format="json")
    assert response.status_code == 400
    assert "name" in response.json()["error"]["details"]


@pytest.mark.parametrize(("raw", "expected"), [("null", None), ("", None)])
def test_a_nullable_form_date_time_takes_null_or_nothing(raw, expected):
    from django.http import QueryDict
    from rest_framework import serializers

    from core.validation import NullableDateTimeField

    class Form(serializers.Serializer):
        at = NullableDateTimeField()

    form = Form(data=QueryDict(f"at={raw}"))
    bad = Form(data=QueryDict("at=soon"))

    assert form.is_valid(), form.errors
    assert form.validated_data["at"] is expected
    assert not bad.is_valid() and "at" in bad.errors


@pytest.mark.parametrize(
    ("path", "field", "limit"),
    [("/api/v1/api-keys/", "name", 100), ("/api/v1/conversations/", "title", 300)],
)
def test_a_length_limit_binds_what_the_client_sent_not_what_normalizing_leaves(
    api_client, path, field, limit
):
    # Controls and outer space are stripped once the value is accepted, but the documented
    # maxLength is the request's: one character too many is refused even if it is a control.
    too_long = "x" * (limit - 1) + "\x1b\x07"
    response = api_client.post(path, {field: too_long}, format="json")
    assert response.status_code == 400, response.json()
    assert field in response.json()["error"]["details"]

    at_the_limit = "x" * (limit - 1) + "\x1b"
    response = api_client.post(path, {field: at_the_limit}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()[field] == "x" * (limit - 1)
