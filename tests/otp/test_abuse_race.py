"""The abuse counters under real concurrency (PostgreSQL: threads, each its own connection)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from campaigns.otp.abuse import abuse_check
from campaigns.otp.errors import OtpErrorCode
from campaigns.otp.models import CounterScope, OtpRateCounter, PumpingBlock
from compliance.roles import Role
from smsplatform.kernel.errors import ApplicationError
from smsplatform.models import AuditLog, Notification
from tests.support.db import postgres_only, race

pytestmark = [postgres_only, pytest.mark.django_db(transaction=True)]

T0 = datetime(2026, 12, 7, 10, 0, 0, tzinfo=UTC)


def _attempt(phone: str, limits: dict[str, Any], client_ip: str | None = None) -> str:
    try:
        abuse_check(limits=limits, phone=phone, country="HK", client_ip=client_ip, token_name="race", now=T0)
    except ApplicationError as exc:
        return exc.code
    return "sent"


def test_fifty_concurrent_sends_to_one_phone_let_exactly_five_through() -> None:
    limits = {"phone": {"count": 5, "window_seconds": 3600}}
    results = race(50, lambda i: _attempt("+85291234567", limits, client_ip=f"198.51.100.{i}"))
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert results.count("sent") == 5
    assert results.count(OtpErrorCode.RATE_LIMITED) == 45
    # The refused 45 took no slot in any counter.
    assert OtpRateCounter.objects.get(scope=CounterScope.PHONE).count == 5
    assert OtpRateCounter.objects.get(scope=CounterScope.TOKEN).count == 5
    assert OtpRateCounter.objects.get(scope=CounterScope.REFUSAL, key="phone").count == 45


def test_a_concurrent_burst_to_one_range_makes_one_block_and_one_notification(make_user: Any) -> None:
    ops = make_user(Role.OPERATIONS, username="ops-race")
    ops.email = "ops@example.hk"
    ops.save()
    results = race(40, lambda i: _attempt(f"+8525123{i:04d}", {}))
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert results.count("sent") == 10  # the default range burst
    assert results.count(OtpErrorCode.OTP_RANGE_BLOCKED) == 30
    assert PumpingBlock.objects.count() == 1
    assert AuditLog.objects.filter(action="otp.pumping_block.create").count() == 1
    assert Notification.objects.count() == 1
