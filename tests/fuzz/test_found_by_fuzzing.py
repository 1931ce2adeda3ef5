"""What the fuzzers found, pinned as plain tests on the paths where it was found."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("contact_id", [[None], {"a": 1}, True, "1", 1.5])
def test_customer_facts_with_a_contact_id_that_is_not_an_integer(api_for: Any, make_user: Any, contact_id: Any) -> None:
    """schemathesis: POST /api/v1/customer-facts/ with contact_id [None] answered 500."""
    client = api_for(make_user(superuser=True))
    body = {"facts": [{"contact_id": contact_id, "kind": "order"}], "idempotency_key": "facts-fuzz-0001"}
    response = client.post("/api/v1/customer-facts/", json.dumps(body), content_type="application/json")
    assert response.status_code == 400, response.content[:300]
    errors = response.json()["error"]["details"]["errors"]
    assert errors[0]["field"] == "facts.0.contact_id"


@pytest.mark.parametrize("days", ["0", "-5", "366", "1003778", "99999999999"])
def test_contact_search_sent_within_days_out_of_range(api_for: Any, make_user: Any, days: str) -> None:
    """schemathesis: GET /api/v1/contacts/?sent_within_days=1003778 answered 500 (date overflow)."""
    response = api_for(make_user(superuser=True)).get("/api/v1/contacts/", {"sent_within_days": days})
    assert response.status_code == 400, response.content[:300]
    assert response.json()["error"]["field"] == "sent_within_days"
