"""Fixtures for the gateway tests: the delivery tests' simulator gateway and real Kannels."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateways.models import Gateway
from tests.support.factories import GatewayFactory, GatewayRateFactory, account_fund
from tests.support.kannel import Kannel


@pytest.fixture
def sim(db: Any) -> Gateway:
    gateway = GatewayFactory.create(
        code="sim-hk",
        name="Simulator",
        countries=["HK"],
        priority=1,
        encodings=["GSM-7", "UCS-2"],
        settings={"receipt_latency_ms": 0},
    )
    GatewayRateFactory.create(gateway=gateway, country="HK", price_per_segment=Decimal("0.30"))
    account_fund(balance=Decimal("100"), monthly_quota_segments=1000)
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
