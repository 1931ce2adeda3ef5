"""Queueing outbound messages on the delivery tests' simulator gateway (``sim-hk``)."""

from __future__ import annotations

from django.db import transaction

from gateways.delivery.queue import message_queue
from gateways.models import OutboundMessage
from smsplatform.kernel.actor import Actor

SYSTEM = Actor.system("test")


def queue(
    destination: str, body: str = "Hello from the shop", sender: str = "#SHOPHK", purpose: str = "transactional"
) -> OutboundMessage:
    with transaction.atomic():
        return message_queue(
            actor=SYSTEM,
            gateway_code="sim-hk",
            sender_id=sender,
            destination=destination,
            body=body,
            purpose=purpose,
        )
