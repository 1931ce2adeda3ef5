"""A transactional flow's messages take the priority lane (gateways.models.PRIORITY_PURPOSES): on
the Celery path the tick hands them to message_submit_enqueue, which routes them to the priority
queue; on an SMPP gateway the bind worker's every-pass priority claim takes them ahead of a
campaign it is sending on the same bind."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from campaigns.automations.engine import flow_tick
from gateways.models import PRIORITY_PURPOSES, MessagePurpose, MessageState, OutboundMessage
from tests.automations.flows.conftest import active_flow, event
from tests.support.factories import ContactFactory
from tests.support.smpp import (
    PRIORITY_RATE,
    PRIORITY_WINDOW,
    assert_overtook,
    campaign_messages_queued,
    run_with_priority_message,
    smpp_gateway,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]

CAMPAIGN = 20_000


def test_the_tick_hands_a_transactional_flows_messages_to_the_priority_queue(
    world: dict[str, Any], monkeypatch: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from django.conf import settings

    from gateways import tasks

    sent: list[tuple[str, list[int]]] = []
    monkeypatch.setattr(
        tasks.submit_messages,
        "apply_async",
        lambda args, queue=None, **kw: sent.append((queue or "celery", list(args[1]))),
    )
    monkeypatch.setattr(tasks.submit_messages, "delay", lambda gateway_id, ids: sent.append(("celery", list(ids))))
    flow = active_flow(world)
    for contact in world["contacts"]:
        event(world, contact, "order_shipped", order_ref=f"A-{contact.pk}")

    with django_capture_on_commit_callbacks(execute=True):
        result = flow_tick()

    assert result["send"]["sent"] == 3
    messages = list(OutboundMessage.objects.filter(reference__startswith=flow.reference_prefix))
    assert {m.purpose for m in messages} == {MessagePurpose.TRANSACTIONAL}
    assert MessagePurpose.TRANSACTIONAL in PRIORITY_PURPOSES
    assert sent == [(settings.SMS_PRIORITY_QUEUE, sorted(m.pk for m in messages))]


def test_a_transactional_flows_message_overtakes_a_campaign_on_the_same_smpp_bind(
    world: dict[str, Any], smsc: Any
) -> None:
    """20,000 campaign messages queued and being sent on one SMPP gateway; an order_shipped event
    arrives and the beat tick queues the flow's message right after the worker claimed a batch
    ahead. The worker's priority claim takes it on its next pass and writes it ahead of the
    campaign parts it holds: the simulator's record shows it within the window (and a pass) of
    where the stream was when the tick queued it, not after the campaign."""
    from gateways.models import Account

    gateway = smpp_gateway(smsc, window=PRIORITY_WINDOW, rate=PRIORITY_RATE)
    Account.objects.update(balance=Decimal("100000"), monthly_quota_segments=1_000_000)
    campaign_messages_queued(gateway, CAMPAIGN, reference="campaign:flow-lane")
    flow = active_flow(world, gateway=gateway)
    contact = ContactFactory.create(phone="+85292500001")  # not one of the simulator's fault prefixes

    def event_then_tick() -> dict[str, Any]:
        event(world, contact, "order_shipped", order_ref="A-LANE-1")
        return {"result": flow_tick()}

    run = run_with_priority_message(gateway, event_then_tick)

    assert run.at["result"]["send"]["sent"] == 1
    message = OutboundMessage.objects.get(reference__startswith=flow.reference_prefix)
    assert message.purpose == MessagePurpose.TRANSACTIONAL
    assert message.state == MessageState.DELIVERED, message.error_reason
    assert run.by_priority == [1]  # claimed by the every-pass priority claim
    assert run.at["held"] >= 500  # claimed campaign parts not written yet: the flow's message went ahead
    records = smsc.submitted()
    assert len(records) == CAMPAIGN + 1 and run.stats.accepted_messages == CAMPAIGN + 1
    assert_overtook(records, contact.phone, run, CAMPAIGN)
