from __future__ import annotations

import datetime as dt
import json

import pytest

from knowledge.models import Document
from knowledge.selectors import SearchHit, knowledge_search

pytestmark = pytest.mark.django_db

CORPUS = {
    "cats.txt": (
        "Cats sleep for most of the day and hunt small rodents at night. A domestic cat "
        "purrs when it is content.",
        {"animal": "cat", "year": 2021, "published": "2021-03-04", "author": {"name": "Ann"}},
    ),
    "postgres.txt": (
        "PostgreSQL stores rows in heap pages; a B-tree index speeds up equality and range "
        "lookups. VACUUM reclaims dead tuples.",
        {"topic": "databases", "year": 2023, "published": "2023-06-01", "author": {"name": "Bo"}},
    ),
    "bread.txt": (
        "Knead the dough for ten minutes, let it rise for an hour, then bake the loaf at "
        "220 degrees until the crust is golden.",
        {"topic": "cooking", "year": 2024, "published": "2024-01-15", "author": {"name": "Ann"}},
    ),
    "dogs.md": (
        "# Dogs\n\nDogs are loyal companions that need daily walks and enjoy fetching sticks.",
        {"animal": "dog", "year": 2022, "published": "2022-09-30", "author": {"name": "Cy"}},
    ),
}


@pytest.fixture
def corpus(api_client, upload) -> dict[str, str]:
    ids = {}
    for name, (text, metadata) in CORPUS.items():
        body = upload(api_client, name, text, metadata=json.dumps(metadata)).json()
        assert body["status"] == "processed", body
        ids[name] = body["id"]
    return ids


def search(client, **payload):
    return client.post("/api/v1/knowledge/search/", payload, format="json")


def titles(response) -> list[str]:
    assert response.status_code == 200, response.json()
    return [hit["document"]["title"] for hit in response.json()["results"]]


def test_vector_search_finds_a_paraphrase(api_client, corpus):
    response = search(api_client, query="how do I make a loaf of bread", k=1, mode="vector")

    assert titles(response) == ["bread"]
    hit = response.json()["results"][0]
    assert set(hit) == {
        "chunk_id",
        "document",
        "content",
        "score",
        "similarity",
        "highlight",
        "position",
        "page",
        "section",
    }
    assert hit["document"] == {
        "id": corpus["bread.txt"],
        "title": "bread",
        "content_type": "text/plain",
    }
    assert hit["content"].startswith("Knead the dough")
    assert hit["score"] == hit["similarity"]
    assert 0.3 < hit["similarity"] <= 1


def test_vector_search_ranks_by_meaning_not_words(api_client, corpus):
    response = search(api_client, query="feline pets", k=4, mode="vector")

    assert titles(response)[0] == "cats"
    scores = [hit["score"] for hit in response.json()["results"]]
    assert scores == sorted(scores, reverse=True)


def test_keyword_search_matches_words_and_highlights_them(api_client, corpus):
    response = search(api_client, query="vacuum tuples", mode="keyword")

    assert titles(response) == ["postgres"]
    highlight = response.json()["results"][0]["highlight"]
    assert "<mark>VACUUM</mark>" in highlight
    assert "<mark>tuples</mark>" in highlight


def test_keyword_search_finds_nothing_for_absent_words(api_client, corpus):
    assert titles(search(api_client, query="zeppelin", mode="keyword")) == []


def test_highlights_escape_the_documents_html(api_client, upload):
    upload(api_client, "x.txt", "Zebras <script>alert(1)</script> are < lions & zebras.")

    response = search(api_client, query="zebras", mode="keyword")

    highlight = response.json()["results"][0]["highlight"]
    assert "<script>" not in highlight
    assert "&lt; lions &amp; <mark>zebras</mark>" in highlight
    assert "<mark>zebras</mark>" in highlight


def test_hybrid_search_fuses_both_rankings(api_client, corpus):
    response = search(api_client, query="dough rise bake", k=2)

    assert response.json()["mode"] == "hybrid"
    assert titles(response)[0] == "bread"
    top = response.json()["results"][0]
    # First in both lists: 1/(60+1) + 1/(60+1).
    assert top["score"] == pytest.approx(2 / 61, abs=1e-6)


def test_a_higher_threshold_returns_a_subset(api_client, corpus):
    def hits(threshold: float | None) -> dict[int, float]:
        response = search(
            api_client, query="animals", k=10, mode="vector", similarity_threshold=threshold
        )
        assert response.status_code == 200
        return {hit["chunk_id"]: hit["similarity"] for hit in response.json()["results"]}

    unfiltered, zero, mid, high = hits(None), hits(0.0), hits(0.2), hits(0.9)

    assert len(unfiltered) == 4
    assert set(high) <= set(mid) <= set(zero) <= set(unfiltered)
    assert 0 < len(mid) < len(zero)
    assert high == {}
    assert all(similarity >= 0.2 for similarity in mid.values())
    assert all(similarity >= 0 for similarity in zero.values())
    assert all(similarity < 0.2 for cid, similarity in unfiltered.items() if cid not in mid)


def test_thresholds_apply_to_keyword_and_hybrid_modes_too(api_client, corpus):
    for mode in ("keyword", "hybrid"):
        loose = search(api_client, query="dogs", mode=mode, similarity_threshold=0)
        strict = search(api_client, query="dogs", mode=mode, similarity_threshold=0.99)
        assert titles(loose) and titles(strict) == [], mode


@pytest.mark.parametrize(
    ("metadata_filter", "expected"),
    [
        ({"animal": "cat"}, {"cats"}),
        ({"animal": {"$in": ["cat", "dog"]}}, {"cats", "dogs"}),
        ({"year": {"$gte": 2022, "$lte": 2023}}, {"postgres", "dogs"}),
        ({"year": {"$gt": 2023}}, {"bread"}),
        ({"published": {"$gte": "2022-01-01"}}, {"postgres", "bread", "dogs"}),
        ({"published": {"$lt": "2022-01-01"}}, {"cats"}),
        ({"author": {"name": "Ann"}}, {"cats", "bread"}),
        ({"author.name": "Ann", "year": {"$gte": 2024}}, {"bread"}),
        ({"author.name": {"$in": ["Bo", "Cy"]}}, {"postgres", "dogs"}),
        ({"missing": "x"}, set()),
    ],
)
def test_metadata_filters(api_client, corpus, metadata_filter, expected):
    response = search(
        api_client, query="anything at all", k=10, mode="vector", metadata_filter=metadata_filter
    )

    assert set(titles(response)) == expected


def test_comparisons_skip_values_of_another_type(api_client, corpus, upload):
    upload(api_client, "odd.txt", "An odd one.", metadata='{"year": "unknown"}')

    response = search(
        api_client, query="odd", k=10, mode="vector", metadata_filter={"year": {"$gte": 0}}
    )

    assert set(titles(response)) == {"cats", "postgres", "bread", "dogs"}


@pytest.mark.parametrize(
    "metadata_filter",
    [
        {"year": {"$regex": ".*"}},
        {"year": {"$in": "2021"}},
        {"year": {"$gte": "last year"}},
        {"year": {"$gte": [1]}},
        {"$or": [{"a": 1}]},
    ],
)
def test_bad_metadata_filters_are_a_400(api_client, corpus, metadata_filter):
    response = search(api_client, query="x", metadata_filter=metadata_filter)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_metadata_filter"


def test_content_type_and_date_filters(api_client, corpus):
    markdown_only = search(api_client, query="pets", k=10, mode="vector", content_types=["md"])
    assert titles(markdown_only) == ["dogs"]

    Document.objects.filter(pk=corpus["cats.txt"]).update(
        created_at=dt.datetime(2020, 5, 17, 12, tzinfo=dt.UTC)
    )
    day = search(
        api_client, query="pets", k=10, mode="vector", date_from="2020-05-17", date_to="2020-05-17"
    )
    before = search(api_client, query="pets", k=10, mode="vector", date_to="2020-05-16")
    after = search(api_client, query="pets", k=10, mode="vector", date_from="2021-01-01")

    assert titles(day) == ["cats"]
    assert titles(before) == []
    assert set(titles(after)) == {"postgres", "bread", "dogs"}


def test_search_only_sees_the_callers_documents(api_client, other_client, staff_client, corpus):
    assert titles(search(other_client, query="cats", mode="vector")) == []
    assert titles(search(staff_client, query="cats", k=1, mode="vector")) == ["cats"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"query": ""}, "query"),
        ({"query": "x", "k": 0}, "k"),
        ({"query": "x", "k": 101}, "k"),
        ({"query": "x", "mode": "magic"}, "mode"),
        ({"query": "x", "similarity_threshold": 1.5}, "similarity_threshold"),
        ({"query": "x", "content_types": ["exe"]}, "content_types"),
        ({"query": "x", "date_from": "yesterday"}, "date_from"),
    ],
)
def test_invalid_searches_are_a_400_naming_the_field(api_client, payload, field):
    response = search(api_client, **payload)

    assert response.status_code == 400
    assert field in response.json()["error"]["details"]


def test_the_public_read_service_returns_hits_with_citation_data(user, corpus):
    hits = knowledge_search(user=user, query="database indexes", k=2)

    assert all(isinstance(hit, SearchHit) for hit in hits)
    assert hits[0].document_title == "postgres"
    assert str(hits[0].document_id) == corpus["postgres.txt"]
    assert hits[0].content.startswith("PostgreSQL stores rows")


def test_failed_documents_are_not_searched(api_client, upload, user):
    upload(api_client, "scan.pdf", b"")  # refused outright
    Document.objects.create(
        owner=user,
        title="t",
        filename="t.txt",
        content_type="text/plain",
        size=1,
        sha256="0" * 64,
        source=b"x",
        status="failed",
    )
    assert knowledge_search(user=user, query="anything", mode="vector") == []


def test_similar_documents_rank_by_centroid_and_never_include_itself(api_client, corpus):
    response = api_client.get(f"/api/v1/documents/{corpus['cats.txt']}/similar/?k=3")

    assert response.status_code == 200
    results = response.json()["results"]
    ids = [result["document"]["id"] for result in results]
    assert corpus["cats.txt"] not in ids
    assert len(ids) == 3
    assert results[0]["document"]["title"] == "dogs"
    assert results[0]["score"] >= results[1]["score"] >= results[2]["score"]


def test_similar_rejects_a_bad_k(api_client, corpus):
    response = api_client.get(f"/api/v1/documents/{corpus['cats.txt']}/similar/?k=0")

    assert response.status_code == 400


def test_metadata_query_returns_documents_by_metadata_alone(api_client, other_client, corpus):
    response = api_client.post(
        "/api/v1/knowledge/metadata-query/",
        {"metadata_filter": {"author.name": "Ann"}},
        format="json",
    )

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert {doc["title"] for doc in body["results"]} == {"cats", "bread"}
    assert set(body) == {"count", "next", "previous", "results"}
    other = other_client.post(
        "/api/v1/knowledge/metadata-query/", {"metadata_filter": {}}, format="json"
    )
    assert other.json()["count"] == 0


def test_metadata_query_rejects_bad_filters(api_client):
    response = api_client.post(
        "/api/v1/knowledge/metadata-query/",
        {"metadata_filter": {"a": {"$nope": 1}}},
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_metadata_filter"


def test_a_document_stays_searchable_while_it_is_reprocessed(api_client, upload, settings):
    doc = upload(api_client, "notes.txt", b"Lighthouses guide ships at night.").json()
    settings.KNOWLEDGE_PROCESS_INLINE = False  # the reprocess waits in the job queue

    assert api_client.post(f"/api/v1/documents/{doc['id']}/reprocess/").status_code == 202
    response = api_client.post(
        "/api/v1/knowledge/search/", {"query": "lighthouse", "mode": "vector"}, format="json"
    )

    assert Document.objects.get(pk=doc["id"]).status == "pending"
    assert [hit["document"]["id"] for hit in response.json()["results"]] == [doc["id"]]


def test_a_document_processed_for_the_first_time_is_not_searchable_yet(
    api_client, upload, settings
):
    settings.KNOWLEDGE_PROCESS_INLINE = False
    upload(api_client, "notes.txt", b"Lighthouses guide ships at night.")

    response = api_client.post(
        "/api/v1/knowledge/search/", {"query": "lighthouse", "mode": "vector"}, format="json"
    )

    assert response.json()["results"] == []


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"date_to": "9999-12-31"}, "date_to"),
        ({"date_from": "0001-01-01"}, "date_from"),
        ({"date_to": "9999-12-31T23:59:59-05:00"}, "date_to"),
        ({"date_from": "0001-01-01T00:00:00+05:00"}, "date_from"),
    ],
)
def test_dates_at_the_edge_of_the_calendar_are_a_400_not_a_500(api_client, payload, field):
    for url, body in (
        ("/api/v1/knowledge/search/", {"query": "x", **payload}),
        ("/api/v1/knowledge/metadata-query/", payload),
    ):
        response = api_client.post(url, body, format="json")

        assert response.status_code == 400, (url, response.content)
        assert field in response.json()["error"]["details"]


def test_the_latest_accepted_date_works(api_client, corpus):
    response = search(api_client, query="pets", k=10, mode="vector", date_to="9999-12-30")

    assert len(titles(response)) == 4


def test_content_types_accepts_exactly_what_the_schema_declares(api_client, corpus):
    schema = api_client.get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/v1/knowledge/search/"]["post"]
    ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    component = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    declared = component["properties"]["content_types"]
    items = declared["items"]
    if "$ref" in items:
        items = schema["components"]["schemas"][items["$ref"].rsplit("/", 1)[-1]]
    allowed = set(items["enum"])

    assert {"pdf", "md", "text/plain", "application/pdf"} <= allowed
    for value in sorted(allowed):
        assert search(api_client, query="x", content_types=[value]).status_code == 200, value
    refused = search(api_client, query="x", content_types=["00"])
    assert refused.status_code == 400
    assert "content_types" in refused.json()["error"]["details"]


def test_every_mode_reports_the_cosine_similarity_of_each_hit(api_client, corpus):
    def by_chunk(mode: str) -> dict[int, dict]:
        response = search(api_client, query="vacuum dead tuples", k=4, mode=mode)
        assert response.status_code == 200
        return {hit["chunk_id"]: hit for hit in response.json()["results"]}

    vector, keyword, hybrid = by_chunk("vector"), by_chunk("keyword"), by_chunk("hybrid")

    assert keyword and hybrid
    for hits in (keyword, hybrid):
        for chunk_id, hit in hits.items():
            assert hit["similarity"] is not None and -1 <= hit["similarity"] <= 1
            if chunk_id in vector:  # the same cosine whatever ranked the chunk
                assert hit["similarity"] == pytest.approx(vector[chunk_id]["similarity"], abs=1e-5)
    top = next(iter(keyword.values()))
    assert top["document"]["title"] == "postgres" and top["similarity"] > 0.3
    assert top["score"] != top["similarity"]  # keyword's score is ts_rank_cd


@pytest.mark.parametrize(
    "payload",
    [
        {"date_from": "2020-05-18", "date_to": "2020-05-17"},
        {"date_from": "2020-05-17T12:00:00Z", "date_to": "2020-05-17T11:59:59Z"},
        {"date_from": "2020-05-18T00:00:00+02:00", "date_to": "2020-05-16"},
    ],
)
def test_a_date_range_that_ends_before_it_starts_is_a_400(api_client, payload):
    for url, body in (
        ("/api/v1/knowledge/search/", {"query": "x", **payload}),
        ("/api/v1/knowledge/metadata-query/", payload),
    ):
        response = api_client.post(url, body, format="json")

        assert response.status_code == 400, (url, response.content)
        assert response.json()["error"]["details"]["date_to"] == ["Not before date_from."]


def test_a_one_day_range_from_a_date_to_the_same_date_is_accepted(api_client):
    body = {"query": "x", "date_from": "2020-05-17T23:00:00Z", "date_to": "2020-05-17"}

    assert api_client.post("/api/v1/knowledge/search/", body, format="json").status_code == 200
