"""Celery tasks of the gateways app: thin, named, taking ids (STYLE 9)."""

from __future__ import annotations

from celery import shared_task

from gateways.adapters.base import ReceiptEvent
from gateways.adapters.simulator import simulated_receipt
from gateways.delivery.queue import messages_submit
from gateways.delivery.receipts import receipts_apply_pending, receipts_ingest
from gateways.delivery.reconcile import messages_expire, messages_reconcile
from gateways.models import Gateway, MessagePart, MessageState
from gateways.smpp.journal import journals_recover
from smsplatform.kernel.actor import Actor


@shared_task(name="gateways.submit_messages")
def submit_messages(gateway_id: int, message_ids: list[int] | None = None) -> dict[str, int]:
    return messages_submit(
        actor=Actor.system("gateways.submit_messages"), gateway_id=gateway_id, message_ids=message_ids
    )


@shared_task(name="gateways.reconcile_messages")
def reconcile_messages() -> int:
    receipts_apply_pending()  # receipts stored unapplied while their parts were being written
    # A dead bind worker's journal (on this host) says which of its messages never left: those
    # go back to the queue instead of becoming 'unknown' below.
    journals_recover()
    actor = Actor.system("gateways.reconcile_messages")
    # Receipts that never came: 'expired' after the gateway's validity period (never resent).
    messages_expire(actor=actor)
    return messages_reconcile(actor=actor)


@shared_task(name="gateways.retry_due_messages")
def retry_due_messages() -> int:
    """Re-submit messages whose back-off has passed (HTTP and in-process gateways)."""
    from django.db.models import Q
    from django.utils import timezone

    from gateways.adapters import adapter_for
    from gateways.models import OutboundMessage

    due = (
        OutboundMessage.objects.filter(state=MessageState.QUEUED)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=timezone.now()))
        .values_list("gateway_id", flat=True)
        .distinct()
    )
    count = 0
    for gateway in Gateway.objects.filter(pk__in=list(due), enabled=True):
        if not adapter_for(gateway).sends_from_worker:
            submit_messages.delay(gateway.pk)
            count += 1
    return count


@shared_task(name="gateways.simulator_receipts")
def simulator_receipts(gateway_id: int, message_ids: list[int]) -> dict[str, int]:
    """The simulator's delivery receipts, produced after its configured latency."""
    gateway = Gateway.objects.get(pk=gateway_id)
    events = []
    for part in MessagePart.objects.filter(message_id__in=message_ids, gateway=gateway).select_related("message"):
        status = simulated_receipt(part.message.destination)
        if status is None:
            continue
        events.append(
            ReceiptEvent(
                provider_message_id=part.provider_message_id,
                status=status,
                provider_status="DELIVRD" if status == MessageState.DELIVERED else "UNDELIV",
                error_code="" if status == MessageState.DELIVERED else "001",
            )
        )
    return receipts_ingest(gateway=gateway, events=events)


@shared_task(name="gateways.fold_message_counts")
def fold_message_counts() -> int:
    """Sum the per-statement counter rows of campaign messages into one row per key."""
    from gateways.message_counts import message_counts_fold

    return message_counts_fold()
