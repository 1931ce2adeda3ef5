"""Fixtures of the automations tests: an event source, contacts, and a signed client."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.test import Client
from django.utils import timezone

from campaigns.automations.intake import signature_header_build
from campaigns.automations.models import EventSource
from contacts.models import Contact

URL = "/api/v1/events/batch"
HONG_KONG = ZoneInfo("Asia/Hong_Kong")


@pytest.fixture
def source(db: Any) -> EventSource:
    return EventSource.objects.create(code="shop", name="Online shop")


@pytest.fixture
def contact(db: Any) -> Contact:
    return Contact.objects.create(phone="+85291234567", country="HK", source="crm", crm_key="CRM-1")


@pytest.fixture
def other_contact(db: Any) -> Contact:
    return Contact.objects.create(phone="+85291234568", country="HK", source="crm", crm_key="CRM-2")


def ago(**delta: Any) -> str:
    """An ISO 8601 time this long before now (Hong Kong's offset, as a business would send it)."""
    return (timezone.now() - timedelta(**delta)).astimezone(HONG_KONG).isoformat()


def event(**fields: Any) -> dict[str, Any]:
    """A valid order_paid event of ``contact``; a field given as None is left out."""
    base: dict[str, Any] = {
        "event_id": "e-1",
        "type": "order_paid",
        "occurred_at": ago(days=1),
        "phone": "+85291234567",
        "order_id": "ORD-1",
        "amount": "120.50",
        "currency": "HKD",
    }
    base.update(fields)
    return {key: value for key, value in base.items() if value is not None}


@pytest.fixture
def post(source: EventSource) -> Callable[..., Any]:
    """POST a body to the batch endpoint, signed with the source's secret unless told otherwise."""
    client = Client()

    def send(
        body: Any,
        *,
        secret: str | None = None,
        timestamp: int | None = None,
        signature: str | None = None,
        source_code: str | None = "shop",
        raw: bytes | None = None,
    ) -> Any:
        data = raw if raw is not None else json.dumps(body).encode()
        headers: dict[str, str] = {}
        if source_code is not None:
            headers["X-Event-Source"] = source_code
        if signature is None:
            signature = signature_header_build(
                secret or source.secret, data, timestamp=timestamp if timestamp is not None else int(time.time())
            )
        if signature:
            headers["X-Event-Signature"] = signature
        return client.post(URL, data=data, content_type="application/json", headers=headers)

    return send
