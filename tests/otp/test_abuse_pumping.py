"""SMS-pumping defence: range bursts, high-cost destinations, the conversion ratio, deny lists,
blocks (audited, owners notified once) and the operator's lift (service and admin)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from campaigns.otp.abuse import (
    abuse_check,
    abuse_overview,
    abuse_record_verified,
    pumping_block_lift,
    pumping_blocks_active,
)
from campaigns.otp.errors import OtpErrorCode
from campaigns.otp.models import CounterScope, OtpRateCounter, PumpingBlock, PumpingBlockReason
from compliance.roles import Role
from smsplatform.kernel.actor import Channel
from smsplatform.kernel.errors import ApplicationError, ErrorCode
from smsplatform.models import AuditLog, Notification
from tests.support.actors import actor
from tests.support.factories import GatewayRateFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 12, 7, 10, 0, 0, tzinfo=UTC)
LIMITS: dict[str, Any] = {}


def send(phone: str, *, country: str = "HK", at: datetime = T0) -> None:
    abuse_check(limits=LIMITS, phone=phone, country=country, client_ip=None, token_name=None, now=at)


def outcome(phone: str, **kw: Any) -> str:
    try:
        send(phone, **kw)
    except ApplicationError as exc:
        return exc.code
    return "sent"


@pytest.fixture
def owners(make_user: Any) -> list[Any]:
    ops = make_user(Role.OPERATIONS, username="ops")
    ops.email = "ops@example.hk"
    ops.save()
    tech = make_user(Role.TECHNICAL, username="tech")
    tech.email = "tech@example.hk"
    tech.save()
    marketing = make_user(Role.MARKETING, username="mkt")
    marketing.email = "mkt@example.hk"
    marketing.save()
    return [ops, tech, marketing]


def test_a_sequential_sweep_of_one_range_is_blocked_early(owners: list[Any], caplog: Any) -> None:
    results = [outcome(f"+8525123{n:04d}", at=T0 + timedelta(milliseconds=n)) for n in range(1000)]
    first_refused = results.index(OtpErrorCode.OTP_RANGE_BLOCKED)
    assert first_refused == 10  # the default burst: 10 sends per range per 10 minutes
    assert results[:10] == ["sent"] * 10
    assert set(results[10:]) == {OtpErrorCode.OTP_RANGE_BLOCKED}

    block = PumpingBlock.objects.get()
    assert (block.prefix, block.country, block.reason) == ("+85251230", "HK", PumpingBlockReason.RANGE_BURST)
    assert block.facts["sends"] == 11 and block.facts["threshold"] == 10
    assert block.facts["sample"] == "+852****0010"
    # Audited once, owners (operations and technical, not marketing) told once.
    audit = AuditLog.objects.get(action="otp.pumping_block.create")
    assert audit.object_id == str(block.pk) and (audit.after or {})["prefix"] == "+85251230"
    notification = Notification.objects.get()
    assert notification.recipients == ["ops@example.hk", "tech@example.hk"]
    assert "+85251230" in notification.subject
    assert "- threshold: 10" in notification.body and "- sample: +852****0010" in notification.body
    # No full number anywhere it is written down or logged.
    written = f"{audit.after} {audit.reason} {notification.subject} {notification.body} {caplog.text}"
    assert "+8525123001" not in written

    # A neighbouring range is unaffected.
    assert outcome("+85251240000") == "sent"
    # The refusals show on the metrics selector.
    overview = abuse_overview(now=T0 + timedelta(minutes=1))
    assert [b["prefix"] for b in overview["active_blocks"]] == ["+85251230"]
    assert overview["refusals"] == {"blocked": 990}


def test_a_lifted_range_sends_again_and_a_renewed_burst_blocks_it_again(owners: list[Any]) -> None:
    ops = owners[0]
    for n in range(11):
        send_result = outcome(f"+8525123{n:04d}")
    assert send_result == OtpErrorCode.OTP_RANGE_BLOCKED
    block = PumpingBlock.objects.get()
    assert outcome("+85251230500") == OtpErrorCode.OTP_RANGE_BLOCKED

    out = pumping_block_lift(actor=actor(ops, Channel.ADMIN), block_id=block.pk, reason="Launch-day sign-ups")
    assert out["prefix"] == "+85251230" and out["lifted_by"] == "ops"
    block.refresh_from_db()
    assert block.lifted_at is not None and block.lifted_by == ops and block.lift_reason == "Launch-day sign-ups"
    lift_audit = AuditLog.objects.get(action="otp.pumping_block.lift")
    assert lift_audit.reason == "Launch-day sign-ups" and lift_audit.user_id == ops.pk

    # Within the same ten minutes: the range sends again ...
    assert [outcome(f"+852512306{n:02d}") for n in range(10)] == ["sent"] * 10
    # ... until a new burst, which is a new block (and a new notification).
    assert outcome("+85251230699") == OtpErrorCode.OTP_RANGE_BLOCKED
    assert PumpingBlock.objects.filter(lifted_at__isnull=True).count() == 1
    assert PumpingBlock.objects.count() == 2
    assert Notification.objects.count() == 2


def test_lifting_needs_the_permission_a_reason_and_an_active_block(owners: list[Any]) -> None:
    ops, tech, marketing = owners
    for n in range(11):
        outcome(f"+8525123{n:04d}")
    block = PumpingBlock.objects.get()
    with pytest.raises(ApplicationError) as denied:
        pumping_block_lift(actor=actor(marketing), block_id=block.pk, reason="mine")
    assert denied.value.code == ErrorCode.PERMISSION_DENIED
    assert "operations" in (denied.value.hint or "")
    with pytest.raises(ApplicationError) as no_reason:
        pumping_block_lift(actor=actor(ops), block_id=block.pk, reason="  ")
    assert no_reason.value.field == "reason"
    with pytest.raises(ApplicationError) as missing:
        pumping_block_lift(actor=actor(ops), block_id=block.pk + 100, reason="x")
    assert missing.value.code == ErrorCode.NOT_FOUND
    pumping_block_lift(actor=actor(tech), block_id=block.pk, reason="genuine")
    with pytest.raises(ApplicationError) as again:
        pumping_block_lift(actor=actor(ops), block_id=block.pk, reason="genuine")
    assert again.value.code == OtpErrorCode.PUMPING_BLOCK_LIFTED
    assert AuditLog.objects.filter(action="otp.pumping_block.lift").count() == 1
    assert PumpingBlock.objects.get().lifted_by == tech


def test_high_cost_destinations_trip_at_a_lower_burst() -> None:
    GatewayRateFactory.create(country="GB", price_per_segment=Decimal("1.50"))
    results = [outcome(f"+44791112{n:04d}", country="GB") for n in range(10)]
    assert results[:3] == ["sent"] * 3
    assert results[3] == OtpErrorCode.OTP_RANGE_BLOCKED
    block = PumpingBlock.objects.get()
    assert block.reason == PumpingBlockReason.HIGH_COST_BURST
    assert block.facts["high_cost"] is True and block.facts["top_rate"] == "1.5000"


def test_a_cheap_destination_keeps_the_normal_burst_and_a_disabled_gateway_does_not_count() -> None:
    GatewayRateFactory.create(country="GB", price_per_segment=Decimal("0.39"))
    GatewayRateFactory.create(country="GB", price_per_segment=Decimal("9.99"), gateway__enabled=False)
    assert [outcome(f"+44791112{n:04d}", country="GB") for n in range(10)] == ["sent"] * 10


def test_configured_high_cost_prefixes(settings: Any) -> None:
    settings.SMS_OTP_ABUSE = {"high_cost_prefixes": ["+4479111"], "high_cost_range_burst": 2}
    assert [outcome(f"+44791112{n:04d}", country="GB") for n in range(3)][-1] == OtpErrorCode.OTP_RANGE_BLOCKED
    assert [outcome(f"+44792112{n:04d}", country="GB") for n in range(3)] == ["sent"] * 3


def test_the_deny_list_refuses_outright(settings: Any) -> None:
    settings.SMS_OTP_ABUSE = {"deny_prefixes": ["+882", "+8525999"], "deny_countries": ["kp"]}
    assert outcome("+88234567890", country="") == OtpErrorCode.OTP_PREFIX_DENIED
    assert outcome("+85259991234") == OtpErrorCode.OTP_PREFIX_DENIED
    assert outcome("+850212345678", country="KP") == OtpErrorCode.OTP_PREFIX_DENIED
    assert outcome("+85259981234") == "sent"
    assert not PumpingBlock.objects.exists()
    assert abuse_overview(now=T0)["refusals"] == {"denied": 3}


def test_a_malformed_deny_list_is_reported_by_key(settings: Any) -> None:
    settings.SMS_OTP_ABUSE = {"deny_prefixes": ["882"]}
    error = ApplicationError("", "")
    try:
        send("+85291234567")
    except ApplicationError as exc:
        error = exc
    assert error.code == ErrorCode.VALIDATION_ERROR and (error.field or "").startswith("SMS_OTP_ABUSE.deny_prefixes")


def test_a_low_conversion_prefix_is_blocked(settings: Any) -> None:
    settings.SMS_OTP_ABUSE = {"range_burst": 1000, "conversion_min_sends": 20, "conversion_min_ratio": 0.5}
    # Prefix +8526123 (10,000 numbers): 19 sends, 5 verified; the 20th send has 25 % conversion.
    for n in range(19):
        send(f"+8526123{n:04d}")
    for n in range(5):
        abuse_record_verified(phone=f"+8526123{n:04d}", now=T0)
    assert outcome("+85261230019") == OtpErrorCode.OTP_RANGE_BLOCKED
    block = PumpingBlock.objects.get()
    assert (block.prefix, block.reason) == ("+8526123", PumpingBlockReason.LOW_CONVERSION)
    assert block.facts["sends"] == 20 and block.facts["verified"] == 5 and block.facts["ratio"] == 0.25
    # The whole prefix is refused, in every range below it.
    assert outcome("+85261239999") == OtpErrorCode.OTP_RANGE_BLOCKED

    # A prefix whose codes are verified keeps sending.
    for n in range(30):
        send(f"+8526124{n:04d}")
        abuse_record_verified(phone=f"+8526124{n:04d}", now=T0)
    assert outcome("+85261240099") == "sent"


def test_the_conversion_ratio_waits_for_the_minimum_of_sends(settings: Any) -> None:
    settings.SMS_OTP_ABUSE = {"range_burst": 1000, "conversion_min_sends": 50}
    assert {outcome(f"+8526123{n:04d}") for n in range(49)} == {"sent"}
    assert outcome("+85261230049") == OtpErrorCode.OTP_RANGE_BLOCKED


def test_verified_codes_are_counted_per_prefix() -> None:
    abuse_record_verified(phone="+85261230001", now=T0)
    abuse_record_verified(phone="+85261239999", now=T0)
    row = OtpRateCounter.objects.get(scope=CounterScope.PREFIX_VERIFIED)
    assert (row.key, row.count) == ("+8526123", 2)


def test_no_block_notification_when_nobody_holds_the_roles() -> None:
    for n in range(11):
        outcome(f"+8525123{n:04d}")
    assert PumpingBlock.objects.count() == 1
    assert not Notification.objects.exists()
    assert (AuditLog.objects.get(action="otp.pumping_block.create").after or {})["notified"] == 0


# The admin ------------------------------------------------------------------------------------


def _admin(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _blocked_range() -> PumpingBlock:
    for n in range(11):
        outcome(f"+8525123{n:04d}")
    return PumpingBlock.objects.get()


def test_admin_lift_asks_for_a_reason_then_lifts(owners: list[Any]) -> None:
    block = _blocked_range()
    url = reverse("admin:otp_pumpingblock_changelist")
    client = _admin(owners[0])
    page = client.get(url)
    assert page.status_code == 200 and "+85251230" in page.content.decode()
    ask = client.post(url, {"action": "lift_blocks", "_selected_action": [block.pk]})
    assert ask.status_code == 200 and "reason" in ask.content.decode()
    assert PumpingBlock.objects.get().lifted_at is None
    empty = client.post(url, {"action": "lift_blocks", "_selected_action": [block.pk], "apply": "Lift", "reason": ""})
    assert empty.status_code == 200
    assert PumpingBlock.objects.get().lifted_at is None
    done = client.post(
        url, {"action": "lift_blocks", "_selected_action": [block.pk], "apply": "Lift", "reason": "known campaign"}
    )
    assert done.status_code == 302
    block.refresh_from_db()
    assert block.lifted_by == owners[0] and block.lift_reason == "known campaign"
    assert AuditLog.objects.get(action="otp.pumping_block.lift").channel == Channel.ADMIN
    # Lifting again through the admin reports the coded error instead of acting twice.
    again = client.post(
        url,
        {"action": "lift_blocks", "_selected_action": [block.pk], "apply": "Lift", "reason": "again"},
        follow=True,
    )
    assert "already lifted" in again.content.decode()
    assert AuditLog.objects.filter(action="otp.pumping_block.lift").count() == 1


def test_admin_lift_is_refused_without_the_permission(owners: list[Any]) -> None:
    block = _blocked_range()
    marketing = owners[2]
    # Marketing may view the blocks (granted here) but not lift them: the action is not offered,
    # and posting it anyway changes nothing.
    from django.contrib.auth.models import Permission

    marketing.user_permissions.add(Permission.objects.get(codename="view_pumpingblock"))
    client = _admin(marketing)
    url = reverse("admin:otp_pumpingblock_changelist")
    assert "lift_blocks" not in client.get(url).content.decode()
    client.post(url, {"action": "lift_blocks", "_selected_action": [block.pk], "apply": "Lift", "reason": "mine"})
    assert PumpingBlock.objects.get().lifted_at is None
    assert not AuditLog.objects.filter(action="otp.pumping_block.lift").exists()


def test_admin_blocks_are_read_only(owners: list[Any]) -> None:
    block = _blocked_range()
    client = _admin(owners[0])
    change = client.post(reverse("admin:otp_pumpingblock_change", args=[block.pk]), {"prefix": "+1"})
    assert change.status_code == 403
    delete = client.post(reverse("admin:otp_pumpingblock_delete", args=[block.pk]), {"post": "yes"})
    assert delete.status_code == 403
    assert PumpingBlock.objects.get().prefix == "+85251230"


def test_roles_grant_lifting_to_operations_and_technical(roles: None) -> None:
    for role, expected in [(Role.OPERATIONS, True), (Role.TECHNICAL, True), (Role.MARKETING, False)]:
        codenames = set(Group.objects.get(name=role).permissions.values_list("codename", flat=True))
        assert ("lift_pumpingblock" in codenames) is expected


def test_active_blocks_selector_lists_only_active(owners: list[Any]) -> None:
    block = _blocked_range()
    assert [b["block_id"] for b in pumping_blocks_active()] == [block.pk]
    pumping_block_lift(actor=actor(owners[0]), block_id=block.pk, reason="ok")
    assert pumping_blocks_active() == []
