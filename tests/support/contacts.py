"""Helpers shared by the contacts and opt-out tests."""

from __future__ import annotations

import itertools
from typing import Any

from contacts.services import contacts_upsert
from smsplatform.kernel.actor import Actor, Channel

_keys = itertools.count(1)


def key(prefix: str = "k") -> str:
    return f"{prefix}-test-{next(_keys):06d}"


def consent(**overrides: Any) -> dict[str, Any]:
    return {
        "purpose": "marketing",
        "wording": "I agree to receive offers by SMS from Shop HK. 我同意接收推廣短訊。",
        "source": "web_form",
        "obtained_at": "2026-01-05T10:00:00+08:00",
        "proof_reference": "form-submission-991",
        **overrides,
    }


def api_actor(user: Any, channel: Channel = Channel.API) -> Actor:
    return Actor(user=user, channel=channel, token_name="test")


def upsert(user: Any, **fields: Any) -> dict[str, Any]:
    fields.setdefault("source", "crm")
    return contacts_upsert(actor=api_actor(user), idempotency_key=fields.pop("idempotency_key", key("up")), **fields)


def create_contact(user: Any, phone: str = "+85291234567", with_consent: bool = True, **fields: Any) -> int:
    result = upsert(user, phone=phone, consent=consent() if with_consent else None, **fields)
    assert result["status"] == "executed", result
    return int(result["result"]["contact_id"])
