"""Report figures against a plain-Python recomputation on random data; masking and permissions on
MCP, REST and admin."""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from campaigns.automations.models import EventType
from compliance.models import OptOut, OptOutReason
from gateways.models import MessageState, OutboundMessage
from reporting.aggregates import refresh_all
from reporting.models import ReportConversion
from reporting.selectors import campaign_report_get, link_clicks_list
from smsplatform.kernel.errors import ApplicationError
from smsplatform.mcp.registry import get_tool
from templates.models import LinkClick
from tests.reporting.builders import T0, batch, campaign, click, contact, event, message, settle
from tests.support.actors import actor
from tests.support.factories import UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]

STATES = [MessageState.DELIVERED] * 6 + [MessageState.FAILED, MessageState.EXPIRED, MessageState.SUBMITTED]


def _random_campaign(owner: Any, seed: int) -> Any:
    rnd = random.Random(seed)
    c = campaign(owner=owner)
    people = [contact() for _ in range(60)]
    batches = [batch(c) for _ in range(3)]
    for i, person in enumerate(people):
        state = rnd.choice(STATES)
        message(
            batches[i % 3],
            person,
            at=T0 + timedelta(minutes=rnd.randrange(0, 600)),
            state=state,
            gateway=rnd.choice(["simulator", "gw"]),
            cost=rnd.choice(["0.40", "0.55"]),
            error_code=rnd.choice(["", "E1", "E2"]) if state != MessageState.DELIVERED else "",
        )
        for _ in range(rnd.randrange(0, 3)):
            click(
                c,
                person,
                at=T0 + timedelta(hours=rnd.randrange(1, 30)),
                device=rnd.choice(["mobile", "desktop", "bot"]),
            )
        if rnd.random() < 0.3:
            event(
                person,
                EventType.ORDER_PAID,
                at=T0 + timedelta(hours=rnd.randrange(1, 40)),
                order=f"o{seed}-{i}",
                amount=str(rnd.randrange(10, 500)),
            )
        if rnd.random() < 0.1:
            OptOut.objects.create(
                phone=person.phone,
                reason=OptOutReason.STOP,
                source="sms:simulator",
                occurred_at=T0 + timedelta(hours=12),
                actor_channel="system",
            )
    # Unique flags as the redirect writes them: the first human click of a token.
    seen: set[str] = set()
    for row in LinkClick.objects.filter(link_id=c.short_link_id).order_by("clicked_at", "id"):
        if row.device_class != "bot" and row.recipient_token not in seen:
            seen.add(row.recipient_token or "")
            LinkClick.objects.filter(pk=row.pk).update(is_unique=True)
    return c


@pytest.mark.parametrize("seed", [1, 2])
def test_report_agrees_with_plain_python(marketer: Any, seed: int) -> None:
    c = _random_campaign(marketer, seed)
    settle()
    report = campaign_report_get(actor=actor(marketer), campaign_id=c.pk)
    msgs = list(OutboundMessage.objects.filter(batch__campaign=c))
    states = Counter(m.state for m in msgs)
    assert report["messages"]["total"] == len(msgs)
    assert report["messages"]["delivered"] == states[MessageState.DELIVERED]
    assert report["messages"]["failed"] == states[MessageState.FAILED]
    assert report["messages"]["undelivered"] == states[MessageState.EXPIRED]
    assert report["messages"]["pending_receipts"] == states[MessageState.SUBMITTED]
    failed_reasons = Counter(m.error_code or "unspecified" for m in msgs if m.state == MessageState.FAILED)
    assert report["messages"]["failed_by_reason"] == dict(failed_reasons)
    billed = sum((m.cost for m in msgs if m.submitted_at is not None), Decimal(0))
    assert report["cost"]["HKD"]["billed"] == str(billed.quantize(Decimal("0.01")))
    clicks = list(LinkClick.objects.filter(link_id=c.short_link_id))
    human = [k for k in clicks if k.device_class != "bot"]
    assert report["clicks"]["total"] == len(human)
    assert report["clicks"]["unique"] == sum(k.is_unique for k in clicks)
    assert report["clicks"]["scanner_and_bot_clicks"] == len(clicks) - len(human)
    by_gw = Counter(m.gateway.code for m in msgs)
    assert {r["gateway"]: r["messages"] for r in report["by_gateway_country"]} == dict(by_gw)
    # Delivered per hour of the receipt.
    hours = Counter(
        m.final_at.replace(minute=0, second=0, microsecond=0).isoformat()
        for m in msgs
        if m.state == MessageState.DELIVERED and m.final_at
    )
    assert {t["bucket"]: t["delivered"] for t in report["trend"] if t["delivered"]} == dict(hours)
    # Opt-outs: a STOP within 48 h after a charged message of the campaign to that phone.
    phones = {m.destination for m in msgs if m.submitted_at and m.created_at <= T0 + timedelta(hours=12)}
    expected = OptOut.objects.filter(phone__in=phones, reason=OptOutReason.STOP).count()
    assert report["opt_outs"]["attributed"] == expected
    # Conversions and net revenue.
    rows = ReportConversion.objects.filter(campaign_id=c.pk, claimed=True)
    assert report["conversions"]["orders"] == rows.count()
    cost_for_roi = Decimal(report["cost"]["HKD"]["for_roi"])
    net = sum((r.amount - r.refunded for r in rows), Decimal(0))
    assert report["roi"]["HKD"] == str(((net - cost_for_roi) / cost_for_roi).quantize(Decimal("0.0001")))
    for key in ("date_from", "gateways", "bucket_rule"):
        assert key in report["scope"]
    assert report["cost_rule"] and report["attribution"]["click_window_hours"] == 120
    assert report["data_latency"]["receipts_outstanding"] == states[MessageState.SUBMITTED]


def test_new_receipts_update_the_report(marketer: Any) -> None:
    """A receipt ingested by the gateway path marks its batch for the next refresh."""
    from gateways.adapters.base import ReceiptEvent
    from gateways.delivery.receipts import receipts_ingest
    from gateways.models import MessagePart

    c = campaign(owner=marketer)
    person = contact()
    m = message(batch(c), person, at=T0, state=MessageState.SUBMITTED)
    MessagePart.objects.create(message=m, part_number=1, provider_message_id="p-1", gateway=m.gateway)
    settle()
    assert campaign_report_get(actor=actor(marketer), campaign_id=c.pk)["messages"]["pending_receipts"] == 1
    receipts_ingest(
        gateway=m.gateway,
        events=[ReceiptEvent(provider_message_id="p-1", status=MessageState.DELIVERED, provider_status="DELIVRD")],
    )
    refresh_all()
    report = campaign_report_get(actor=actor(marketer), campaign_id=c.pk)
    assert (report["messages"]["pending_receipts"], report["messages"]["delivered"]) == (0, 1)
    assert report["data_latency"]["newest_receipt_at"] is not None


def _clicked_campaign(owner: Any) -> Any:
    c = campaign(owner=owner)
    person = contact("+85291234567")
    message(batch(c), person, at=T0)
    click(c, person, at=T0 + timedelta(hours=1), unique=True)
    settle()
    return c


def test_person_level_needs_the_permission_and_masks_phones(marketer: Any, crm: Any) -> None:
    c = _clicked_campaign(marketer)
    with pytest.raises(ApplicationError) as refused:
        link_clicks_list(actor=actor(marketer), campaign_id=c.pk, person_level=True)
    assert refused.value.code == "permission_denied"
    aggregated = link_clicks_list(actor=actor(marketer), campaign_id=c.pk)
    assert aggregated["links"][0]["clicks"] == 1 and "clicks" not in aggregated
    # CRM may list people (and holds view_full_phone); a reports viewer with person-level rights but
    # without view_full_phone sees masked numbers only.
    masked_user = UserFactory.create()
    from django.contrib.auth.models import Permission

    masked_user.user_permissions.set(
        Permission.objects.filter(
            codename__in=["view_campaign_report", "view_person_clicks", "view_campaign", "view_all_campaigns"]
        )
    )
    rows = link_clicks_list(actor=actor(masked_user), campaign_id=c.pk, person_level=True)
    assert rows["phones_masked"] is True
    assert rows["clicks"][0]["phone"] == "+852****4567"
    assert "91234567" not in str(rows)


def test_mcp_rest_and_admin_refuse_without_permission_and_mask(marketer: Any) -> None:
    c = _clicked_campaign(marketer)
    outsider = UserFactory.create()
    spec = get_tool("sms_marketing.link_clicks.list")
    assert spec is not None and spec.permission == "reporting.view_campaign_report"
    # MCP: the handler refuses person-level rows to the marketer; output never has the full phone.
    with pytest.raises(ApplicationError):
        spec.handler(actor(marketer), {"campaign_id": c.pk, "person_level": True})
    out = get_tool("sms_marketing.campaign_reports.get").handler(actor(marketer), {"campaign_id": c.pk})  # type: ignore[union-attr]
    assert spec.output_problem(link_clicks_list(actor=actor(marketer), campaign_id=c.pk)) is None
    assert get_tool("sms_marketing.campaign_reports.get").output_problem(out) is None  # type: ignore[union-attr]
    # REST
    api = APIClient()
    api.force_authenticate(outsider)
    assert api.get(f"/api/v1/campaigns/{c.pk}/report/").status_code == 403
    api.force_authenticate(marketer)
    ok = api.get(f"/api/v1/campaigns/{c.pk}/report/?granularity=day")
    assert ok.status_code == 200, ok.content
    assert ok.json()["messages"]["delivered"] == 1
    assert api.get(f"/api/v1/link-clicks/?campaign_id={c.pk}&person_level=true").status_code == 403
    assert api.get(f"/api/v1/campaigns/{c.pk}/attribution/").status_code == 200
    # Another marketer's campaign is not found, not shown.
    other = UserFactory.create(roles=["marketing"])
    api.force_authenticate(other)
    assert api.get(f"/api/v1/campaigns/{c.pk}/report/").status_code == 404
    # Admin: the report page with its chart for the owner; refused for the outsider.
    web = Client()
    web.force_login(marketer)
    page = web.get(f"/admin/reporting/campaignreport/{c.pk}/report/")
    assert page.status_code == 200
    assert b"<svg xmlns" in page.content and b"<polyline" in page.content and b"91234567" not in page.content
    assert b"cdn" not in page.content.lower()
    web.force_login(outsider)
    assert web.get(f"/admin/reporting/campaignreport/{c.pk}/report/").status_code in (302, 403)
