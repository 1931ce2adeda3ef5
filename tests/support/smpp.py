"""An SMPP gateway pointed at an SMSC simulator, and messages queued on it (``smpp-hk``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import transaction

from gateways.delivery import message_queue
from gateways.models import Gateway, GatewayRate, OutboundMessage, Provider
from gateways.quotas import account_instance
from smsplatform.kernel.actor import Actor
from tests.support.smsc_setup import SYSTEM_ID

SYSTEM = Actor.system("test")


def smpp_gateway(server: Any, *, window: int = 10, rate: int = 1000) -> Gateway:
    gateway = Gateway.objects.create(
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
    GatewayRate.objects.create(gateway=gateway, country="HK", price_per_segment=Decimal("0.30"))
    account = account_instance()
    account.balance, account.monthly_quota_segments = Decimal("1000"), 100_000
    account.save()
    return gateway


def queue(destination: str, body: str = "Hello from the shop [GSM] €5") -> OutboundMessage:
    with transaction.atomic():
        return message_queue(
            actor=SYSTEM,
            gateway_code="smpp-hk",
            sender_id="#SHOPHK",
            destination=destination,
            body=body,
            purpose="transactional",
        )


def state(message: OutboundMessage) -> str:
    message.refresh_from_db()
    return message.state
