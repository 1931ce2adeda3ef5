"""Fail-over: which messages a gateway's fallback may take over. One rule, one home.

Two paths hand messages to a fallback gateway: ``outcomes_record``, when a gateway answers a
submit with 'unavailable' or 'link down', and the SMPP bind worker, when its bind stays down
(``messages_fail_over``). Both select the messages that move with ``fail_over_eligible``, in
SQL, so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db.models import Exists, OuterRef, Q

from gateways.models import Gateway, MessagePart, OutboundMessage

# Temporary answers that mean the gateway itself is unreachable (not the message refused):
# a message answered so may fail over at once rather than wait for the same gateway.
FAIL_OVER_CODES = frozenset({"gateway_unavailable", "link_down"})


def _fallback_usable(gateway: Gateway, fallback: Gateway | None) -> bool:
    return fallback is not None and fallback.enabled and fallback.pk != gateway.pk


def fallback_usable(gateway: Gateway) -> Gateway | None:
    """``gateway``'s fallback when messages may go to it now: set, enabled and not itself."""
    fallback = gateway.fallback if gateway.fallback_id else None
    return fallback if _fallback_usable(gateway, fallback) else None


def fail_over_eligible(*, gateway: Gateway, fallback: Gateway | None) -> Q:
    """The messages of ``gateway`` that ``fallback`` may take over, as a filter on OutboundMessage:

    * the fallback is usable (set, enabled, not the gateway itself);
    * the message goes to a country the fallback covers;
    * no part of it was taken by a gateway: a multi-part message with a part accepted is
      finished where it started, never split over two gateways (and never sent twice).

    A part taken but not recorded yet (a bind worker records a message's parts when all are
    answered) is known only to its sender, who therefore offers only messages it wrote nothing
    of. Which states may move is the writer's business: both writers take claimed messages."""
    if fallback is None or not _fallback_usable(gateway, fallback):
        return Q(pk__in=[])  # matches nothing (Django answers it without a query)
    return Q(gateway_id=gateway.pk, country__in=sorted(fallback.countries or [])) & Q(
        ~Exists(MessagePart.objects.filter(message_id=OuterRef("pk")))
    )


def messages_fail_over_eligible(*, gateway: Gateway, fallback: Gateway | None, message_ids: Sequence[int]) -> set[int]:
    """Of these messages, the ids ``fallback`` may take over (``fail_over_eligible``)."""
    if not message_ids:
        return set()
    return set(
        OutboundMessage.objects.filter(pk__in=list(message_ids))
        .filter(fail_over_eligible(gateway=gateway, fallback=fallback))
        .values_list("pk", flat=True)
    )
