"""The delivery quarantine: what a gateway sent that the database refused, kept with the reason.

A bind worker writes a flush's answers, receipts and MOs in one transaction. When that write
fails on its data (a byte PostgreSQL refuses, a value too long, a constraint) rather than on the
connection, the worker writes the flush again in halves, and halves of those, until every row
that can be written is, and each row that cannot is here, alone, with the database's message:
one bad receipt never loses its neighbours' results. Operators see the rows in the admin."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from gateways.delivery.receipts import receipt_raw_safe, receipt_text_safe
from gateways.models import DeliveryQuarantine, Gateway, QuarantineKind
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record


@dataclass(frozen=True)
class QuarantineItem:
    kind: QuarantineKind
    payload: dict[str, Any]
    message_id: int | None = None
    provider_message_id: str = ""


def delivery_quarantine(*, actor: Actor, gateway: Gateway, items: Sequence[QuarantineItem], reason: str) -> int:
    """Keep ``items`` (refused by the database for ``reason``) for operators; audited once."""
    if not items:
        return 0
    reason = receipt_text_safe(reason)[:2000]
    with transaction.atomic():
        DeliveryQuarantine.objects.bulk_create(
            [
                DeliveryQuarantine(
                    gateway=gateway,
                    kind=item.kind,
                    message_id=item.message_id,
                    provider_message_id=receipt_text_safe(item.provider_message_id)[:100],
                    payload=receipt_raw_safe(item.payload),
                    reason=reason,
                )
                for item in items
            ]
        )
        audit_record(
            actor=actor,
            action="delivery.quarantine",
            object_type="gateway",
            object_id=str(gateway.pk),
            after={
                "count": len(items),
                "kinds": sorted({str(item.kind) for item in items}),
                "provider_message_ids": [receipt_text_safe(i.provider_message_id) for i in items[:100]],
            },
            reason=reason,
        )
    return len(items)


__all__ = ["QuarantineItem", "delivery_quarantine"]
