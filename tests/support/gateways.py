"""Gateway test data: a sender-ID application as the apply tool takes it."""

from __future__ import annotations

from typing import Any


def application(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "sender_id": "#SHOPNEW",
        "brand": "Shop New",
        "company_name": "Shop New Limited",
        "company_registration_no": "12345678",
        "purpose": "Promotions and order updates to consenting customers.",
        "regions": ["HK"],
        "documents": [
            {"name": "business_registration", "status": "provided"},
            {"name": "authorisation_letter", "status": "provided"},
        ],
        "reason": "New brand launch",
    }
    fields.update(overrides)
    return fields
