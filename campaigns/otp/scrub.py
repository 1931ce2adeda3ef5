"""Scrubbing codes out of stored OTP messages.

An OTP message's body holds its code until the gateway has it; once the message is past the queue
(submitted, delivered, failed, expired, unknown) nothing reads the body again, so it is rewritten
with the code masked (the ``masked_body`` written beside each send). Set-based: one UPDATE for the
messages, one for the send rows, whatever their number. Queued and submitting messages are left
alone: the sender still needs their text.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db.models import F, OuterRef, Subquery
from django.utils import timezone

from campaigns.otp.models import VerificationSend
from gateways.models import MessagePurpose, MessageState, OutboundMessage

STILL_SENDING = (MessageState.QUEUED, MessageState.SUBMITTING)
BATCH = 5000


def otp_bodies_scrub(*, verification_ids: Sequence[int] | None = None) -> int:
    """Rewrite the bodies of OTP messages that left the queue; returns how many were rewritten."""
    sends = VerificationSend.objects.filter(scrubbed_at__isnull=True)
    if verification_ids is not None:
        sends = sends.filter(verification_id__in=list(verification_ids))
    message_ids = list(
        sends.exclude(message__state__in=STILL_SENDING).order_by("pk").values_list("message_id", flat=True)[:BATCH]
    )
    if not message_ids:
        return 0
    masked = VerificationSend.objects.filter(message_id=OuterRef("pk")).order_by("-pk").values("masked_body")[:1]
    # The state is checked again in the UPDATE itself: a message claimed since the read keeps its text.
    rewritten = (
        OutboundMessage.objects.filter(pk__in=message_ids, purpose=MessagePurpose.OTP)
        .exclude(state__in=STILL_SENDING)
        .update(body=Subquery(masked))
    )
    # Marked done only where the stored body now is the masked one.
    VerificationSend.objects.filter(
        message_id__in=message_ids, scrubbed_at__isnull=True, message__body=F("masked_body")
    ).update(scrubbed_at=timezone.now())
    return rewritten
