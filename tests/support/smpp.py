"""An SMPP gateway pointed at an SMSC simulator, and messages queued on it (``smpp-hk``)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import connection, transaction

from gateways.delivery.queue import message_queue
from gateways.models import Gateway, OutboundMessage, Provider
from gateways.smpp.worker import BindWorker
from smsplatform.kernel.actor import Actor
from tests.support.factories import GatewayFactory, GatewayRateFactory, account_fund
from tests.support.smsc_setup import PASSWORD, SYSTEM_ID

SYSTEM = Actor.system("test")


def smpp_gateway(server: Any, *, window: int = 10, rate: int = 1000) -> Gateway:
    gateway = GatewayFactory.create(
        code="smpp-hk",
        name="SMPP HK",
        provider=Provider.SMPP,
        countries=["HK"],
        priority=1,
        window_size=window,
        max_rate_per_second=rate,
        encodings=["GSM-7", "UCS-2"],
        settings={"host": server.host, "port": server.port, "system_id": SYSTEM_ID},
        credentials_env={"password": "TEST_SMPP_PASSWORD"},
    )
    GatewayRateFactory.create(gateway=gateway, country="HK", price_per_segment=Decimal("0.30"))
    account_fund(balance=Decimal("1000"), monthly_quota_segments=100_000)
    return gateway


def queue(
    destination: str, body: str = "Hello from the shop [GSM] €5", purpose: str = "transactional"
) -> OutboundMessage:
    with transaction.atomic():
        return message_queue(
            actor=SYSTEM,
            gateway_code="smpp-hk",
            sender_id="#SHOPHK",
            destination=destination,
            body=body,
            purpose=purpose,
        )


def state(message: OutboundMessage) -> str:
    message.refresh_from_db()
    return message.state


CHINESE_200 = ("親愛的會員您好，本週末全館商品八折優惠，憑此簡訊至門市消費即可享有額外贈品。" * 6)[:200]


def worker_thread(worker: BindWorker, **run: Any) -> tuple[threading.Thread, threading.Event]:
    """Start ``worker.run(**run)`` on a thread of its own (which closes its own database
    connection when it ends); set the returned event to stop it."""
    stop = threading.Event()

    def target() -> None:
        try:
            worker.run(stop=stop, **run)
        finally:
            connection.close()

    runner = threading.Thread(target=target)
    runner.start()
    return runner, stop


def run_worker(gateway: Gateway, idle: float = 1.0) -> Any:
    """One bind worker run against the gateway's SMSC until it has been idle ``idle`` seconds."""
    worker = BindWorker(Gateway.objects.get(pk=gateway.pk), password=PASSWORD, flush_interval=0.05, poll_interval=0.05)
    return worker.run(stop=threading.Event(), idle_exit_after=idle)


# --- a campaign on the link, and a priority message that must overtake it ----------------------

PRIORITY_WINDOW = 50  # the window the overtaking tests give the gateway
PRIORITY_RATE = 2_000  # submit_sm per second: the link, not the database, sets the pace


def campaign_message_rows(gateway: Any, start: int, stop: int, reference: str, sender_id: str = "#SHOPHK") -> list[Any]:
    """Queued marketing messages to +8526 numbers ``start``..``stop`` - 1, unsaved, as the dispatch
    writes them (the benches write a million of them through this too)."""
    return [
        OutboundMessage(
            gateway=gateway,
            sender_id=sender_id,
            destination=f"+8526{i:07d}",
            country="HK",
            body="Weekend sale: 20% off everything. Reply STOP to opt out",
            encoding="GSM-7",
            segments=1,
            cost=Decimal("0.3"),
            purpose="marketing",
            quota_reference=reference,
        )
        for i in range(start, stop)
    ]


def campaign_messages_queued(gateway: Gateway, count: int, reference: str = "campaign:bench") -> None:
    """A campaign's queued messages written in bulk, as the dispatch writes them."""
    from gateways.models import QuotaReservation

    QuotaReservation.objects.create(reference=reference, segments=count, amount=Decimal("0.3") * count)
    OutboundMessage.objects.bulk_create(campaign_message_rows(gateway, 0, count, reference), batch_size=5_000)


@dataclass
class Overtaking:
    """What the worker did around the moment a priority message was queued: ``at`` holds what
    ``queue_priority`` returned, with ``submitted`` (parts written by then) and ``held`` (campaign
    parts claimed and not yet written); ``by_priority`` the priority claims that took something."""

    at: dict[str, Any]
    by_priority: list[int]
    stats: Any


def run_with_priority_message(gateway: Gateway, queue_priority: Callable[[], dict[str, Any]]) -> Overtaking:
    """One bind worker run over a queued campaign; right after a claim-ahead past 2,000 parts (the
    worker then holds a batch of campaign parts not written yet) ``queue_priority`` queues the
    priority message. Runs until the worker is idle."""
    worker = BindWorker(Gateway.objects.get(pk=gateway.pk), password=PASSWORD, flush_interval=0.05, poll_interval=0.05)
    at: dict[str, Any] = {}
    claim, priority = worker._claim, worker._claim_priority
    by_priority: list[int] = []

    def claim_then_queue() -> int:
        taken = claim()
        if not at and taken and worker.stats.submitted_parts >= 2_000:
            with worker.lock:
                held = sum(1 for job, _index in worker.ready if not job.done)
            at.update(queue_priority())
            at.update(submitted=worker.stats.submitted_parts, held=held)  # once it is queued
        return taken

    def claim_priority() -> int:
        taken = priority()
        if taken:
            by_priority.append(taken)
        return taken

    worker._claim = claim_then_queue  # type: ignore[method-assign]
    worker._claim_priority = claim_priority  # type: ignore[method-assign]
    stats = worker.run(stop=threading.Event(), idle_exit_after=1.0)
    return Overtaking(at=at, by_priority=by_priority, stats=stats)


def assert_overtook(records: list[dict[str, Any]], destination: str, run: Overtaking, campaign: int) -> None:
    """The priority message is in the SMSC's record within the window (and a pass) of where the
    stream was when it was queued: ahead of what the worker held, far ahead of the campaign."""
    at = run.at
    position = next(i for i, r in enumerate(records) if r["destination"] == destination.lstrip("+"))
    # Ahead of it: what was written when it was queued, and what the link wrote before the next pass
    # claimed it (the window in flight; at most half a second at the link's rate on a busy machine).
    assert position - at["submitted"] <= 2 * PRIORITY_WINDOW + PRIORITY_RATE // 2, (position, at)
    assert position - at["submitted"] < at["held"], (position, at)
    assert position < campaign // 4, (position, at)
