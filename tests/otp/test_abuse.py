"""OTP abuse defence: velocity limits (campaigns/otp/abuse.py abuse_check) and its counters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from campaigns.otp.abuse import abuse_check, abuse_settings, otp_rate_counters_prune, rate_limit_refusals
from campaigns.otp.errors import OtpErrorCode
from campaigns.otp.models import CounterScope, OtpRateCounter
from campaigns.otp.tasks import prune_rate_counters
from smsplatform.kernel.errors import ApplicationError, ErrorCode

pytestmark = pytest.mark.django_db

PHONE = "+85291234567"
# The start of an hour-long window: every test's clock is explicit.
T0 = datetime(2026, 12, 7, 10, 0, 0, tzinfo=UTC)
LIMITS = {"phone": {"count": 5, "window_seconds": 3600}}


def check(phone: str = PHONE, *, at: datetime = T0, limits: dict[str, Any] | None = None, **kw: Any) -> None:
    abuse_check(
        limits=LIMITS if limits is None else limits,
        phone=phone,
        country=kw.pop("country", "HK"),
        client_ip=kw.pop("client_ip", None),
        token_name=kw.pop("token_name", None),
        now=at,
    )


def refused(**kw: Any) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        check(**kw)
    return info.value


def test_phone_limit_refuses_the_sixth_with_a_retry_time() -> None:
    for _ in range(5):
        check()
    error = refused()
    assert error.code == OtpErrorCode.RATE_LIMITED
    assert error.field == "phone"
    # Five sends at the window's start: the sliding window lets one more in once they weigh
    # 4 of 5, a fifth of the way into the next hour (3600 + 720 s).
    assert error.details["retry_after"] == 4320
    assert "4320 seconds" in (error.hint or "")
    assert error.details["limit"] == 5 and error.details["window_seconds"] == 3600
    assert PHONE not in error.message and PHONE not in (error.hint or "")


def test_a_refused_attempt_takes_no_slot_anywhere() -> None:
    for _ in range(5):
        check(client_ip="203.0.113.7", token_name="shop-app")
    for _ in range(10):
        assert refused(client_ip="203.0.113.7", token_name="shop-app").field == "phone"
    counts = dict(
        OtpRateCounter.objects.filter(
            scope__in=[CounterScope.PHONE, CounterScope.CLIENT_IP, CounterScope.TOKEN, CounterScope.COUNTRY]
        ).values_list("scope", "count")
    )
    assert counts == {"phone": 5, "client_ip": 5, "token": 5, "country": 5}
    # Hammering does not push the retry time further out either.
    assert refused(at=T0 + timedelta(seconds=600)).details["retry_after"] == 3720


def test_an_attempt_that_fails_after_taking_its_slots_gives_them_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """The slots commit with their own statement: anything that goes wrong after it (here the
    conversion check's read failing) gives every one back before the error goes on."""
    from campaigns.otp import abuse

    check(client_ip="203.0.113.7", token_name="shop-app")

    def broken(*_args: Any, **_kw: Any) -> None:
        raise RuntimeError("the conversion read failed")

    monkeypatch.setattr(abuse, "_check_conversion", broken)
    with pytest.raises(RuntimeError, match="conversion read"):
        check(client_ip="203.0.113.7", token_name="shop-app")
    counts = dict(
        OtpRateCounter.objects.filter(
            scope__in=[CounterScope.PHONE, CounterScope.CLIENT_IP, CounterScope.TOKEN, CounterScope.COUNTRY]
        ).values_list("scope", "count")
    )
    assert counts == {"phone": 1, "client_ip": 1, "token": 1, "country": 1}


def test_each_limit_names_its_field() -> None:
    limits = {
        "phone": {"count": 100, "window_seconds": 3600},
        "ip": {"count": 2, "window_seconds": 60},
        "token": {"count": 3, "window_seconds": 60},
        "country": {"count": 4, "window_seconds": 60},
    }
    check("+85291230001", limits=limits, client_ip="198.51.100.1", token_name="t1")
    check("+85291230002", limits=limits, client_ip="198.51.100.1", token_name="t1")
    assert refused(phone="+85291230003", limits=limits, client_ip="198.51.100.1", token_name="t1").field == "client_ip"
    check("+85291230004", limits=limits, client_ip="198.51.100.2", token_name="t1")
    assert refused(phone="+85291230005", limits=limits, client_ip="198.51.100.3", token_name="t1").field == "token"
    check("+85291230006", limits=limits, client_ip="198.51.100.4", token_name="t2")
    assert refused(phone="+85291230007", limits=limits, client_ip="198.51.100.5", token_name="t3").field == "country"
    # Another country has its own budget.
    check("+6581234567", limits=limits, country="SG", client_ip="198.51.100.6", token_name="t4")


def test_missing_keys_fall_back_to_the_platform_defaults(settings: Any) -> None:
    settings.SMS_OTP_ABUSE = {"phone": {"count": 2, "window_seconds": 60}, "ip": {"count": 3, "window_seconds": 60}}
    check(limits={})
    check(limits={})
    assert refused(limits={}).details["limit"] == 2
    # The template's own phone limit wins; its missing ip limit is the platform's.
    for n in range(3):
        check(f"+8529876543{n}", limits={"phone": {"count": 9, "window_seconds": 60}}, client_ip="192.0.2.1")
    assert refused(phone="+85298765439", limits={}, client_ip="192.0.2.1").field == "client_ip"


def test_a_malformed_limit_is_a_validation_error() -> None:
    error = refused(limits={"phone": {"count": 0, "window_seconds": 60}})
    assert error.code == ErrorCode.VALIDATION_ERROR
    assert error.field == "limits.phone.count"


def test_ipv6_clients_are_counted_per_64() -> None:
    limits = {"phone": {"count": 100, "window_seconds": 60}, "ip": {"count": 2, "window_seconds": 60}}
    check("+85291230001", limits=limits, client_ip="2001:db8:1:2::10")
    check("+85291230002", limits=limits, client_ip="2001:db8:1:2:ffff::1")
    assert refused(phone="+85291230003", limits=limits, client_ip="2001:db8:1:2::99").field == "client_ip"
    check("+85291230004", limits=limits, client_ip="2001:db8:1:3::10")


def test_the_window_slides() -> None:
    """Two fixed windows approximate a sliding one: sends at the end of the last hour still
    weigh on the start of this one, less and less."""
    for _ in range(5):
        check()  # at 10:00:00, the start of the 10:00 window
    next_window = T0 + timedelta(hours=1)
    # 11:00:01: the five weigh 5 * 3599/3600; one more would make about 6.
    error = refused(at=next_window + timedelta(seconds=1))
    assert error.details["retry_after"] == 719
    assert refused(at=next_window + timedelta(seconds=719)).code == OtpErrorCode.RATE_LIMITED
    check(at=next_window + timedelta(seconds=720))  # 1 + 5 * 2880/3600 = 5
    assert refused(at=next_window + timedelta(seconds=721)).field == "phone"


def test_counters_hold_no_phone_number_or_ip() -> None:
    check(client_ip="203.0.113.9", token_name="web")
    keys = list(OtpRateCounter.objects.values_list("key", flat=True))
    assert not any("91234567" in key or "203.0.113" in key for key in keys)


def test_refusals_are_counted_for_the_metrics() -> None:
    for _ in range(5):
        check()
    for _ in range(3):
        refused()
    assert rate_limit_refusals(now=T0 + timedelta(minutes=5)) == {"phone": 3}
    assert rate_limit_refusals(now=T0 + timedelta(days=2)) == {}


def test_prune_deletes_only_windows_that_no_longer_matter() -> None:
    check()  # 10:00 window (and the range, conversion windows)
    later = T0 + timedelta(hours=1, minutes=30)
    check("+85290000001", at=later)
    for _ in range(5):
        check("+85290000002", at=later)
    refused(phone="+85290000002", at=later)
    before = OtpRateCounter.objects.count()
    # At 12:30 the 10:00 hour windows no longer weigh on anything; the 11:00 ones still do.
    removed = otp_rate_counters_prune(now=T0 + timedelta(hours=2, minutes=30))
    assert removed > 0
    assert OtpRateCounter.objects.count() == before - removed
    assert (
        not OtpRateCounter.objects.filter(window_start=int(T0.timestamp()), window_seconds=3600)
        .exclude(scope=CounterScope.REFUSAL)
        .exists()
    )
    assert OtpRateCounter.objects.filter(scope=CounterScope.PHONE, window_start__gt=int(T0.timestamp())).count() == 2
    # Refusal counts stay for the metrics' retention, then go.
    assert OtpRateCounter.objects.filter(scope=CounterScope.REFUSAL).exists()
    retention = abuse_settings().refusal_retention_days
    otp_rate_counters_prune(now=later + timedelta(days=retention, hours=1))
    assert not OtpRateCounter.objects.exists()


def test_the_beat_task_prunes() -> None:
    OtpRateCounter.objects.create(
        scope=CounterScope.PHONE, key="k", window_seconds=60, window_start=0, count=1, expires_at=120
    )
    assert prune_rate_counters() == 1


def test_the_prune_task_is_on_the_beat_schedule() -> None:
    from smsplatform.schedules import PERIODIC

    assert any(task == "otp.prune_rate_counters" for _name, task, _every in PERIODIC)


def test_a_send_costs_two_round_trips() -> None:
    """The block and rate lookups and the read of the closed windows in one round trip (two
    statements on SQLite), then one upsert of all six counters (phone, IP, token, country, range,
    conversion prefix)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    check("+85291230001", client_ip="192.0.2.1", token_name="web")
    with CaptureQueriesContext(connection) as queries:
        check("+85291230002", client_ip="192.0.2.1", token_name="web")
    statements = [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert len(statements) == (2 if connection.vendor == "postgresql" else 3), statements
    assert "pumpingblock" in statements[0] and "gatewayrate" in statements[0]
    assert "ON CONFLICT" in statements[-1]


def test_abuse_check_refuses_to_run_inside_a_transaction() -> None:
    """It commits its own work (a block and a refusal must outlive the error it raises), so a
    caller's transaction around it is a programming error, caught at once."""
    from django.db import transaction

    with pytest.raises(RuntimeError, match="durable"), transaction.atomic():
        check()


def test_the_clock_defaults_to_now() -> None:
    for _ in range(2):
        abuse_check(
            limits={"phone": {"count": 2, "window_seconds": 60}},
            phone=PHONE,
            country="HK",
            client_ip=None,
            token_name=None,
        )
    with pytest.raises(ApplicationError) as info:
        abuse_check(
            limits={"phone": {"count": 2, "window_seconds": 60}},
            phone=PHONE,
            country="HK",
            client_ip=None,
            token_name=None,
        )
    assert 1 <= info.value.details["retry_after"] <= 120
