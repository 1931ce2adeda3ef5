"""What the gateways app keeps of people, and for how long (smsplatform.operations.retention):
message bodies are blanked after their period (the row stays: state, cost, parts and receipts
are the figures reports and invoices stand on), inbound texts are deleted."""

from __future__ import annotations

from datetime import datetime

from gateways.models import InboundMessage, OutboundMessage
from smsplatform.operations.retention import id_window_purge, retention_register


def message_bodies_purge(cutoff: datetime, size: int) -> int:
    return id_window_purge(
        model=OutboundMessage,
        time_field="created_at",
        cutoff=cutoff,
        size=size,
        cursor="message_bodies",
        update={"body": ""},
    )


def inbound_messages_purge(cutoff: datetime, size: int) -> int:
    return id_window_purge(
        model=InboundMessage, time_field="received_at", cutoff=cutoff, size=size, cursor="inbound_messages"
    )


def retention_kinds_register() -> None:
    retention_register(
        "message_bodies", "Outbound message texts (the row and its figures are kept)", message_bodies_purge
    )
    retention_register("inbound_messages", "Inbound SMS (replies, STOP): the whole row", inbound_messages_purge)
