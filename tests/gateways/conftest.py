"""Fixtures for the gateway tests: the delivery tests' simulator gateway and real Kannels."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateways.models import Gateway, GatewayRate, Provider
from gateways.quotas import account_instance
from tests.support.kannel import Kannel


@pytest.fixture
def sim(db: Any) -> Gateway:
    gateway = Gateway.objects.create(
        code="sim-hk",
        name="Simulator",
        provider=Provider.SIMULATOR,
        countries=["HK"],
        priority=1,
        encodings=["GSM-7", "UCS-2"],
        settings={"receipt_latency_ms": 0},
    )
    GatewayRate.objects.create(gateway=gateway, country="HK", price_per_segment=Decimal("0.30"))
    account = account_instance()
    account.balance, account.monthly_quota_segments = Decimal("100"), 1000
    account.save()
    return gateway


@pytest.fixture
def kannel_factory(tmp_path: Path) -> Iterator[Callable[..., Kannel]]:
    """Start a Kannel in front of an SMSC: ``kannel_factory(host=, port=, system_id=, password=,
    inbound_url=)``. Every Kannel started is killed with SIGKILL in teardown."""
    started: list[Kannel] = []

    def start(*, host: str, port: int, system_id: str, password: str, **options: Any) -> Kannel:
        kannel = Kannel(
            workdir=tmp_path / f"kannel{len(started)}",
            smsc_host=host,
            smsc_port=port,
            system_id=system_id,
            smsc_password=password,
            **options,
        )
        started.append(kannel)
        return kannel.start()

    yield start
    for kannel in started:
        kannel.kill()
