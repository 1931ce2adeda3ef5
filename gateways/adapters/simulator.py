"""The embedded simulator: deterministic by destination prefix, no network.

Prefixes (E.164 digits without '+'), the same as the SMSC simulator the tests run:
  85259000 -> permanent failure, invalid destination
  85259001 -> throttled on the first two attempts, then accepted
  85259002 -> accepted, receipt 'undelivered'
  85259003 -> accepted, no receipt ever
  85259004 -> link drop: temporary failure before anything was submitted
(+852 5900 xxxx numbers are valid Hong Kong mobile numbers, so they pass phone validation.)
  anything else -> accepted, receipt 'delivered'
Receipts are produced by a Celery task after the gateway's ``settings['receipt_latency_ms']``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from gateways.adapters.base import GatewayAdapter, OutgoingSms, SendOutcome, register_adapter
from gateways.models import MessageState

INVALID, THROTTLED, UNDELIVERED, NO_RECEIPT, LINK_DROP = "85259000", "85259001", "85259002", "85259003", "85259004"


def simulated_receipt(destination: str) -> MessageState | None:
    digits = destination.lstrip("+")
    if digits.startswith(NO_RECEIPT):
        return None
    if digits.startswith(UNDELIVERED):
        return MessageState.FAILED
    return MessageState.DELIVERED


@register_adapter
class SimulatorAdapter(GatewayAdapter):
    provider = "simulator"

    def send(self, batch: Sequence[OutgoingSms]) -> list[SendOutcome]:
        outcomes = []
        for sms in batch:
            digits = sms.destination.lstrip("+")
            if digits.startswith(INVALID):
                outcomes.append(SendOutcome.permanent("invalid_destination", "ESME_RINVDSTADR: invalid destination"))
            elif digits.startswith(THROTTLED) and sms.attempt <= 2:
                outcomes.append(SendOutcome.temporary("throttled", "ESME_RTHROTTLED", retry_after=1.0))
            elif digits.startswith(LINK_DROP):
                outcomes.append(SendOutcome.temporary("link_down", "connection to the SMSC dropped", retry_after=2.0))
            else:
                outcomes.append(SendOutcome.accepted([f"sim-{uuid.uuid4().hex}" for _ in range(sms.segments)]))
        return outcomes

    @property
    def receipt_latency_seconds(self) -> float:
        return float((self.gateway.settings or {}).get("receipt_latency_ms", 200)) / 1000
