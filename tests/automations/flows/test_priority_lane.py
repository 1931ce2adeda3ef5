"""A transactional flow's messages take the priority lane (gateways.models.PRIORITY_PURPOSES): on
the Celery path the tick hands them to message_submit_enqueue, which routes them to the priority
queue; on an SMPP gateway the bind worker's every-pass priority claim takes them ahead of a
campaign it is sending on the same bind."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import pytest

from campaigns.automations.engine import flow_tick
from gateways.models import PRIORITY_PURPOSES, Gateway, MessagePurpose, MessageState, OutboundMessage, QuotaReservation
from gateways.smpp.worker import BindWorker
from tests.automations.flows.conftest import active_flow, event
from tests.support.factories import ContactFactory
from tests.support.smpp import smpp_gateway
from tests.support.smsc_setup import PASSWORD

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]

CAMPAIGN = 20_000
RATE = 2_000  # submit_sm per second


def _bulk_campaign(gateway: Gateway, count: int) -> None:
    """A campaign's queued messages written in bulk, as the dispatch writes them."""
    reference = "campaign:flow-lane"
    QuotaReservation.objects.create(reference=reference, segments=count, amount=Decimal("0.3") * count)
    OutboundMessage.objects.bulk_create(
        [
            OutboundMessage(
                gateway=gateway,
                sender_id="#SHOPHK",
                destination=f"+8526{i:07d}",
                country="HK",
                body="Weekend sale: 20% off everything. Reply STOP to opt out",
                encoding="GSM-7",
                segments=1,
                cost=Decimal("0.3"),
                purpose="marketing",
                quota_reference=reference,
            )
            for i in range(count)
        ],
        batch_size=5_000,
    )


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

    gateway = smpp_gateway(smsc, window=50, rate=RATE)
    Account.objects.update(balance=Decimal("100000"), monthly_quota_segments=1_000_000)
    _bulk_campaign(gateway, CAMPAIGN)
    flow = active_flow(world, gateway=gateway)
    contact = ContactFactory.create(phone="+85292500001")  # not one of the simulator's fault prefixes
    worker = BindWorker(Gateway.objects.get(pk=gateway.pk), password=PASSWORD, flush_interval=0.05, poll_interval=0.05)
    at_tick: dict[str, Any] = {}
    claim, priority = worker._claim, worker._claim_priority
    by_priority: list[int] = []

    def claim_then_tick() -> int:
        taken = claim()
        if not at_tick and taken and worker.stats.submitted_parts >= 2_000:
            with worker.lock:
                held = sum(1 for job, _index in worker.ready if not job.done)
            event(world, contact, "order_shipped", order_ref="A-LANE-1")
            result = flow_tick()
            at_tick.update(result=result, submitted=worker.stats.submitted_parts, held=held)
        return taken

    def claim_priority() -> int:
        taken = priority()
        if taken:
            by_priority.append(taken)
        return taken

    worker._claim = claim_then_tick  # type: ignore[method-assign]
    worker._claim_priority = claim_priority  # type: ignore[method-assign]
    stats = worker.run(stop=threading.Event(), idle_exit_after=1.0)

    assert at_tick["result"]["send"]["sent"] == 1
    message = OutboundMessage.objects.get(reference__startswith=flow.reference_prefix)
    assert message.purpose == MessagePurpose.TRANSACTIONAL
    assert message.state == MessageState.DELIVERED, message.error_reason
    assert by_priority == [1]  # claimed by the every-pass priority claim
    assert at_tick["held"] >= 500  # claimed campaign parts not written yet: the flow's message went ahead
    records = smsc.submitted()
    assert len(records) == CAMPAIGN + 1 and stats.accepted_messages == CAMPAIGN + 1
    destination = contact.phone.lstrip("+")
    position = next(i for i, r in enumerate(records) if r["destination"] == destination)
    assert position - at_tick["submitted"] <= 2 * 50 + RATE // 2, (position, at_tick)
    assert position - at_tick["submitted"] < at_tick["held"], (position, at_tick)
    assert position < CAMPAIGN // 4, (position, at_tick)
