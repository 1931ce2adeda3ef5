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


def _storable(text: str) -> str:
    """An MO's text as PostgreSQL stores it: a NUL (UCS-2 U+0000, a latin-1 0x00 octet) or an
    undecodable surrogate becomes U+FFFD, the rest (line breaks included) is kept."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)
    return text


def inbound_receive(*, gateway: Gateway, events: Iterable[InboundEvent]) -> list[InboundMessage]:
    """Store mobile-originated SMS (idempotent per provider id) and hand each to the handlers.
    Their text comes from outside: NULs and undecodable characters are replaced, never refused."""
    stored: list[InboundMessage] = []
    for event in events:
        event = InboundEvent(
            source=_storable(event.source),
            destination=_storable(event.destination),
            body=_storable(event.body),
            provider_message_id=_storable(event.provider_message_id),
            raw=event.raw,
        )
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
