"""An SMPP gateway pointed at an SMSC simulator, and messages queued on it (``smpp-hk``)."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

from django.db import transaction

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


def run_worker(gateway: Gateway, idle: float = 1.0) -> Any:
    """One bind worker run against the gateway's SMSC until it has been idle ``idle`` seconds."""
    worker = BindWorker(Gateway.objects.get(pk=gateway.pk), password=PASSWORD, flush_interval=0.05, poll_interval=0.05)
    return worker.run(stop=threading.Event(), idle_exit_after=idle)
