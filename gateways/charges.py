"""The charging rule: what one outbound message costs, stated once and used by every reader.

Gateways bill a message they accepted, whatever its receipt says later (SMPP aggregators and
Kannel bill on submit_sm_resp; every adapter here reports acceptance the same way). So the quota
is consumed when a gateway accepts a message, or when a submission was interrupted and it may have
gone out (``unknown``), and released for a message no gateway accepted (gateways.delivery.outcomes,
gateways.delivery.reconcile). The reads say the same: send_batches.list's ``charged``,
delivery_status.get's ``charge`` per message and quotas.get's consumption all follow this rule.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import Q

from gateways.models import MessageState

CHARGE_RULE = (
    "A message costs its price (per segment, as the gateway billed its parts) once a gateway accepted it "
    "or may have: submitted, delivered, failed or expired after acceptance (the gateway bills the "
    "submission; a failure receipt does not refund it), and unknown (the submission was interrupted, so it "
    "may have gone out). A message no gateway accepted costs nothing: refused or invalid at submission, "
    "suppressed by an opt-out at claim, withdrawn by a cancellation, temporary failures with their retries "
    "exhausted, and messages still queued. Quota and balance are consumed by the same rule, at acceptance."
)


def charged_q() -> Q:
    """The rule as a filter on OutboundMessage: the messages that cost their price."""
    return Q(submitted_at__isnull=False) | Q(state=MessageState.UNKNOWN)


def is_charged(*, state: str, submitted_at: Any) -> bool:
    """The rule for one message in Python (same answer as ``charged_q``)."""
    return submitted_at is not None or state == MessageState.UNKNOWN


def message_charge(*, state: str, submitted_at: Any, cost: Decimal) -> Decimal:
    return cost if is_charged(state=state, submitted_at=submitted_at) else Decimal(0)
