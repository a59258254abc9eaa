"""Metadata filters on list values: equality and $in match an array that contains the value,
in search and in the metadata query alike."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.django_db

DOCUMENTS = {
    "balloon.txt": (
        "Hot air balloons rise over the field at dawn.",
        {"tags": ["balloon", "field"]},
    ),
    "kite.txt": ("A kite flies on a windy beach.", {"tags": ["kite", "beach"]}),
    "scalar.txt": ("One balloon, tagged with a plain string.", {"tags": "balloon"}),
    "nested.txt": (
        "A grid of coloured squares, tagged with nested lists.",
        {"tags": [["red", "blue"], ["green"]], "codes": [3, "3", True, None, 4.5]},
    ),
    "people.txt": ("A team photo.", {"team": {"members": ["ann", "bo"]}}),
}


@pytest.fixture
def tagged(api_client, upload, settings) -> None:
    # 5 uploads and 2 requests per case are more than the expensive routes' 30 a minute.
    settings.CHATTER_RATE_LIMITS = {**settings.CHATTER_RATE_LIMITS, "expensive": "1000/m"}
    for name, (text, metadata) in DOCUMENTS.items():
        body = upload(api_client, name, text, metadata=json.dumps(metadata)).json()
        assert body["status"] == "processed", body


def searched(client, metadata_filter) -> set[str]:
    response = client.post(
        "/api/v1/knowledge/search/",
        {"query": "anything", "k": 20, "mode": "vector", "metadata_filter": metadata_filter},
        format="json",
    )
    assert response.status_code == 200, response.json()
    return {hit["document"]["title"] for hit in response.json()["results"]}


def queried(client, metadata_filter) -> set[str]:
    response = client.post(
        "/api/v1/knowledge/metadata-query/", {"metadata_filter": metadata_filter}, format="json"
    )
    assert response.status_code == 200, response.json()
    return {document["title"] for document in response.json()["results"]}


# One upload of the documents for all cases (each upload embeds): a list, not parametrize.
CASES = [
    # The README's own example, and plain equality, on an array field.
    ({"tags": {"$in": ["balloon"]}}, {"balloon", "scalar"}),
    ({"tags": "balloon"}, {"balloon", "scalar"}),
    ({"tags": {"$in": ["kite", "field"]}}, {"balloon", "kite"}),
    # A list value: arrays that contain all of its items.
    ({"tags": ["balloon"]}, {"balloon"}),
    ({"tags": ["balloon", "field"]}, {"balloon"}),
    ({"tags": ["balloon", "kite"]}, set()),
    # Nested lists: a list value also matches an array holding that list as an item.
    ({"tags": ["red", "blue"]}, {"nested"}),
    ({"tags": {"$in": [["green"], "kite"]}}, {"nested", "kite"}),
    ({"tags": "red"}, set()),  # an item of an inner list is not an item of the array
    # Mixed types: values match by JSON type, never by their text.
    ({"codes": 3}, {"nested"}),
    ({"codes": "3"}, {"nested"}),
    ({"codes": True}, {"nested"}),
    ({"codes": 4.5}, {"nested"}),
    ({"codes": {"$in": [7, "4.5"]}}, set()),
    # A list under a nested key, by either spelling.
    ({"team.members": "bo"}, {"people"}),
    ({"team": {"members": {"$in": ["cy", "ann"]}}}, {"people"}),
]


def test_equality_and_in_match_arrays_that_contain_the_value(api_client, tagged):
    wrong = {}
    for metadata_filter, expected in CASES:
        found = (searched(api_client, metadata_filter), queried(api_client, metadata_filter))
        if found != (expected, expected):
            wrong[json.dumps(metadata_filter)] = {"search, query": found, "expected": expected}
    assert wrong == {}
