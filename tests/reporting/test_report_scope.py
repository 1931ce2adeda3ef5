"""Opt-out window, gateway filter, date range and daily buckets of campaign_reports.get."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from compliance.models import OptOut, OptOutReason
from reporting.selectors import campaign_report_get
from smsplatform.kernel.errors import ApplicationError
from tests.reporting.builders import T0, batch, campaign, contact, message, settle
from tests.support.actors import actor

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]
H = timedelta(hours=1)


def _stop(phone: str, at: Any, reason: str = OptOutReason.STOP) -> None:
    OptOut.objects.create(phone=phone, reason=reason, source="sms:simulator", occurred_at=at, actor_channel="system")


def test_opt_outs_inside_the_window_only_and_stop_only(marketer: Any) -> None:
    c = campaign(owner=marketer)
    inside, outside, web = contact(), contact(), contact()
    b = batch(c)
    for person in (inside, outside, web):
        message(b, person, at=T0)
    _stop(inside.phone, T0 + 47 * H)
    _stop(outside.phone, T0 + 49 * H)
    _stop(web.phone, T0 + H, reason=OptOutReason.WEB)
    settle()
    report = campaign_report_get(actor=actor(marketer), campaign_id=c.pk)
    assert report["opt_outs"]["attributed"] == 1
    assert "48 h" in report["opt_outs"]["rule"]


def test_gateway_filter_date_range_and_daily_buckets(marketer: Any) -> None:
    c = campaign(owner=marketer)
    b = batch(c)
    message(b, contact(), at=T0, gateway="simulator")
    message(b, contact(), at=T0 + 2 * H, gateway="gw")
    message(b, contact(), at=T0 + 26 * H, gateway="gw")
    settle()
    me = actor(marketer)
    assert campaign_report_get(actor=me, campaign_id=c.pk, gateways=["gw"])["messages"]["delivered"] == 2
    day = campaign_report_get(actor=me, campaign_id=c.pk, date_from="2026-11-02", date_to="2026-11-02")
    assert day["messages"]["delivered"] == 2
    assert day["scope"]["date_from"].startswith("2026-11-02T00:00")
    daily = campaign_report_get(actor=me, campaign_id=c.pk, granularity="day")
    assert [(t["bucket"], t["delivered"]) for t in daily["trend"]] == [("2026-11-02", 2), ("2026-11-03", 1)]
    with pytest.raises(ApplicationError) as bad:
        campaign_report_get(actor=me, campaign_id=c.pk, gateways=["nope"])
    assert bad.value.field == "gateways"
    with pytest.raises(ApplicationError) as backwards:
        campaign_report_get(actor=me, campaign_id=c.pk, date_from="2026-11-03", date_to="2026-11-01")
    assert backwards.value.field == "date_to"
