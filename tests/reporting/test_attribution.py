"""Attribution rules on hand-built timelines (defaults: click window 120 h, delivery window 24 h)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from campaigns.automations.models import EventType
from reporting.models import AttributionRule, ReportConversion
from reporting.selectors import conversion_attribution_get
from tests.reporting.builders import T0, batch, campaign, click, contact, event, message, settle
from tests.support.actors import actor

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]

H = timedelta(hours=1)


def _row(order: str) -> ReportConversion:
    return ReportConversion.objects.get(key__endswith=f":{order}")


def test_delivery_inside_window_is_credited_outside_is_not() -> None:
    c = campaign()
    near, far = contact(), contact()
    b = batch(c)
    message(b, near, at=T0)
    message(b, far, at=T0)
    event(near, EventType.ORDER_PAID, at=T0 + 23 * H, order="o1", amount="100")
    event(far, EventType.ORDER_PAID, at=T0 + 25 * H, order="o2", amount="100")
    settle()
    assert (_row("o1").rule, _row("o1").campaign_id) == (AttributionRule.DELIVERY, c.pk)
    assert (_row("o2").rule, _row("o2").campaign_id) == (AttributionRule.NONE, None)


def test_click_inside_window_is_credited_outside_is_not() -> None:
    c = campaign()
    inside, outside = contact(), contact()
    b = batch(c)
    message(b, inside, at=T0)
    message(b, outside, at=T0)
    click(c, inside, at=T0 + 2 * H, unique=True)
    click(c, outside, at=T0 + 2 * H, unique=True)
    event(inside, EventType.ORDER_PAID, at=T0 + 2 * H + timedelta(days=4, hours=23), order="in", amount="50")
    event(outside, EventType.ORDER_PAID, at=T0 + 2 * H + timedelta(days=5, hours=1), order="out", amount="50")
    settle()
    assert (_row("in").rule, _row("in").campaign_id, _row("in").touch_link_id) == (
        AttributionRule.CLICK,
        c.pk,
        c.short_link_id,
    )
    assert _row("out").campaign_id is None


def test_refund_is_deducted_from_the_order_it_refunds(marketer: Any) -> None:
    c = campaign(owner=marketer)
    person = contact()
    message(batch(c), person, at=T0)
    event(person, EventType.ORDER_PAID, at=T0 + H, order="r1", amount="300")
    settle()
    # The refund arrives later, in another refresh.
    event(person, EventType.ORDER_REFUNDED, at=T0 + 48 * H, refund_of="r1", amount="120")
    settle()
    row = _row("r1")
    assert (row.amount, row.refunded, row.campaign_id) == (Decimal("300"), Decimal("120"), c.pk)
    answer = conversion_attribution_get(actor=actor(marketer), campaign_id=c.pk)
    assert answer["revenue"]["HKD"] == {"revenue": "300.00", "refunded": "120.00", "net_revenue": "180.00"}
    assert answer["orders"] == 1


def test_coupon_outside_windows_credits_the_coupon_campaign() -> None:
    c = campaign(variables={"coupon_code": "SPRING20"})
    person = contact()
    message(batch(c), person, at=T0)
    event(person, EventType.ORDER_PAID, at=T0 + timedelta(days=9), order="cp", amount="80", coupon="spring20")
    event(person, EventType.ORDER_PAID, at=T0 + timedelta(days=9), order="nocp", amount="80")
    settle()
    assert (_row("cp").rule, _row("cp").campaign_id) == (AttributionRule.COUPON, c.pk)
    assert _row("nocp").rule == AttributionRule.NONE


def test_two_campaigns_touching_one_order_last_touch_wins_and_other_is_listed(marketer: Any) -> None:
    first, second = campaign(owner=marketer), campaign(owner=marketer)
    person = contact()
    message(batch(first), person, at=T0)
    message(batch(second), person, at=T0 + 3 * H)
    event(person, EventType.ORDER_PAID, at=T0 + 5 * H, order="two", amount="10")
    settle()
    row = _row("two")
    assert (row.campaign_id, row.other_campaigns) == (second.pk, [first.pk])
    answer = conversion_attribution_get(actor=actor(marketer), campaign_id=first.pk)
    assert answer["orders"] == 0
    assert answer["shared_with_other_campaigns"]["credited_to_others_after_touch_here"] == 1


def test_scanner_click_is_not_a_touch() -> None:
    c = campaign()
    person = contact()
    # Delivered long before (outside the delivery window); only a link scanner "clicked".
    message(batch(c), person, at=T0)
    click(c, person, at=T0 + 48 * H, device="bot")
    event(person, EventType.ORDER_PAID, at=T0 + 50 * H, order="scan", amount="10")
    settle()
    row = _row("scan")
    assert (row.rule, row.campaign_id) == (AttributionRule.NONE, None)
    assert "scanner_click_ignored" in row.limits


def test_other_channel_touch_after_sms_is_a_conflict_not_claimed(marketer: Any) -> None:
    c = campaign(owner=marketer)
    person, earlier = contact(), contact()
    b = batch(c)
    message(b, person, at=T0)
    message(b, earlier, at=T0 + 2 * H)
    event(person, EventType.LINK_CLICKED, at=T0 + 2 * H, channel="email")
    event(person, EventType.ORDER_PAID, at=T0 + 3 * H, order="lost", amount="70")
    event(earlier, EventType.LINK_CLICKED, at=T0 + H, channel="email")
    event(earlier, EventType.ORDER_PAID, at=T0 + 3 * H, order="kept", amount="30")
    settle()
    lost, kept = _row("lost"), _row("kept")
    assert (lost.rule, lost.claimed, lost.sms_campaign_id, lost.conflict_channel) == (
        AttributionRule.OTHER_CHANNEL,
        False,
        c.pk,
        "email",
    )
    assert (kept.claimed, kept.campaign_id, kept.conflict_channel) == (True, c.pk, "email")
    answer = conversion_attribution_get(actor=actor(marketer), campaign_id=c.pk)
    assert answer["channel_conflicts"]["not_claimed"] == [{"channel": "email", "conversions": 1, "revenue": "70.00"}]
    assert answer["orders"] == 1


def test_order_with_placed_and_paid_events_counts_once() -> None:
    c = campaign()
    person = contact()
    message(batch(c), person, at=T0)
    event(person, EventType.ORDER_PLACED, at=T0 + H, order="pp")
    event(person, EventType.ORDER_PAID, at=T0 + 30 * H, order="pp", amount="99")
    settle()
    row = _row("pp")
    # Its time is the first event's (inside the delivery window), its revenue the payment's.
    assert (row.campaign_id, row.amount, row.occurred_at) == (c.pk, Decimal("99"), T0 + H)
    assert ReportConversion.objects.filter(key__endswith=":pp").count() == 1


def test_changed_window_recomputes_and_is_stated(marketer: Any) -> None:
    from gateways.platform_config import platform_config_update
    from smsplatform.config_service import platform_config_get
    from smsplatform.kernel.actor import Actor

    c = campaign(owner=marketer)
    person = contact()
    message(batch(c), person, at=T0)
    event(person, EventType.ORDER_PAID, at=T0 + 30 * H, order="w", amount="10")
    settle()
    assert _row("w").campaign_id is None
    config = platform_config_get()
    platform_config_update(
        actor=Actor.system("test"),
        changes={"tracking": {**config["config"]["tracking"], "attribution_delivery_window_hours": 36}},
        base_version_token=config["base_version_token"],
        idempotency_key="reporting-window-36",
    )
    settle()
    assert _row("w").campaign_id == c.pk
    answer = conversion_attribution_get(actor=actor(marketer), campaign_id=c.pk)
    assert answer["attribution"]["delivery_window_hours"] == 36
    assert "36 h" in answer["attribution"]["text"]
