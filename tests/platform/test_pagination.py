from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("page", ["", "abc", "0", "-1", "1.5", "%7B%7D"])
def test_a_page_that_is_not_a_number_from_1_is_a_400(api_client, page):
    response = api_client.get(f"/api/v1/conversations/?page={page}")

    assert response.status_code == 400
    assert response.json()["error"]["details"] == {"page": ["A page number: an integer from 1."]}


def test_two_pages_at_once_are_a_400(api_client):
    assert api_client.get("/api/v1/conversations/?page=1&page=2").status_code == 400


def test_page_1_and_a_page_past_the_end(api_client):
    assert api_client.get("/api/v1/conversations/?page=1").status_code == 200
    assert api_client.get("/api/v1/conversations/?page=99").status_code == 404
