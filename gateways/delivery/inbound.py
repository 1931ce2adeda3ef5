"""Mobile-originated SMS: stored idempotently per provider id and handed to the registered
handlers (the STOP/START keyword handler registers here)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.db import transaction
from django.utils import timezone

from gateways.adapters.base import InboundEvent
from gateways.models import Gateway, InboundMessage

# Handlers for inbound SMS (the STOP/START keyword handler, contacts/keywords.py, registers here from contacts/apps.py).
InboundHandler = Callable[[InboundMessage], dict[str, Any] | None]
INBOUND_HANDLERS: list[InboundHandler] = []


def register_inbound_handler(handler: InboundHandler) -> InboundHandler:
    INBOUND_HANDLERS.append(handler)
    return handler


def inbound_receive(*, gateway: Gateway, events: Iterable[InboundEvent]) -> list[InboundMessage]:
    """Store mobile-originated SMS (idempotent per provider id) and hand each to the handlers."""
    stored: list[InboundMessage] = []
    for event in events:
        with transaction.atomic():
            if event.provider_message_id:
                message, created = InboundMessage.objects.get_or_create(
                    gateway=gateway,
                    provider_message_id=event.provider_message_id,
                    defaults={"source": event.source, "destination": event.destination, "body": event.body},
                )
                if not created:
                    continue
            else:
                message = InboundMessage.objects.create(
                    gateway=gateway, source=event.source, destination=event.destination, body=event.body
                )
            results = {}
            for handler in INBOUND_HANDLERS:
                outcome = handler(message)
                if outcome:
                    results[getattr(handler, "__name__", "handler")] = outcome
            message.handled_at = timezone.now()
            message.handler_result = results
            message.save(update_fields=["handled_at", "handler_result"])
            stored.append(message)
    return stored
