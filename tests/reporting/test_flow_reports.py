"""Automation-flow reports (campaign_reports.get with flow_id, REST /automations/<id>/report/, the
admin page): figures against a plain-Python count of the flow's messages, incremental refresh,
opt-out attribution, the exactly-one-of rule, and permissions on MCP, REST and admin."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from campaigns.automations.flow_models import Flow
from compliance.models import OptOut, OptOutReason
from contacts.models import Contact
from gateways.models import Gateway, MessageState, OutboundMessage
from reporting import aggregates
from reporting.aggregates import refresh_flow_messages
from reporting.models import ReportCursor, ReportFlowChunk
from reporting.selectors import flow_report_get, report_get
from smsplatform.kernel.errors import ApplicationError
from smsplatform.mcp.registry import get_tool
from tests.reporting.builders import T0, batch, campaign, contact, message, settle
from tests.support.actors import actor
from tests.support.factories import UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]

FINAL = (MessageState.DELIVERED, MessageState.FAILED, MessageState.EXPIRED)
STATES = [MessageState.DELIVERED] * 5 + [
    MessageState.FAILED,
    MessageState.EXPIRED,
    MessageState.SUBMITTED,
    MessageState.QUEUED,
]


def flow(name: str = "Cart reminder") -> Flow:
    return Flow.objects.create(name=name, trigger_event_types=["cart_abandoned"], steps=[{"kind": "send"}])


def flow_message(
    f: Flow,
    person: Contact,
    *,
    at: Any,
    enrolment: int = 1,
    step: int = 0,
    state: str = MessageState.DELIVERED,
    gateway: str = "simulator",
    cost: str = "0.50",
    error_code: str = "",
    purpose: str = "marketing",
) -> OutboundMessage:
    """A flow's message as the tick writes it: no batch, reference automation:<flow>:<enrolment>:<step>."""
    final = state in FINAL
    return OutboundMessage.objects.create(
        gateway=Gateway.objects.get(code=gateway),
        sender_id="#SHOPHK",
        destination=person.phone,
        country=person.country,
        body="x",
        encoding="GSM-7",
        segments=1,
        cost=Decimal(cost),
        currency="HKD",
        purpose=purpose,
        state=state,
        reference=f"automation:{f.pk}:{enrolment}:{step}",
        quota_reference=f"automation:{f.pk}:tick:abc",
        contact=person,
        error_code=error_code,
        created_at=at - timedelta(seconds=5),
        submitted_at=None if state == MessageState.QUEUED else at - timedelta(seconds=2),
        final_at=at if final else None,
    )


def _random_flow(seed: int) -> Flow:
    rnd = random.Random(seed)
    f = flow(f"Flow {seed}")
    for i in range(50):
        state = rnd.choice(STATES)
        flow_message(
            f,
            contact(),
            at=T0 + timedelta(minutes=rnd.randrange(0, 900)),
            enrolment=i + 1,
            state=state,
            gateway=rnd.choice(["simulator", "gw"]),
            cost=rnd.choice(["0.40", "0.55"]),
            error_code=rnd.choice(["", "E1", "E2"]) if state in (MessageState.FAILED, MessageState.EXPIRED) else "",
            purpose=rnd.choice(["marketing", "transactional"]),
        )
    return f


def _plain(f: Flow) -> dict[str, Any]:
    """The figures counted in Python from the flow's messages, nothing shared with the aggregates."""
    rows = [
        m
        for m in OutboundMessage.objects.filter(batch__isnull=True).select_related("gateway")
        if m.reference.split(":")[:2] == ["automation", str(f.pk)]
    ]
    states = Counter(m.state for m in rows)
    failed = Counter(m.error_code or "unspecified" for m in rows if m.state == MessageState.FAILED)
    expired = Counter(m.error_code or "unspecified" for m in rows if m.state == MessageState.EXPIRED)
    split: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for m in rows:
        split[(m.gateway.code, m.country)]["messages"] += 1
        split[(m.gateway.code, m.country)][m.state] += 1
    billed = sum((m.cost for m in rows if m.submitted_at is not None or m.state == MessageState.UNKNOWN), Decimal(0))
    return {
        "total": len(rows),
        "delivered": states[MessageState.DELIVERED],
        "failed": states[MessageState.FAILED],
        "undelivered": states[MessageState.EXPIRED],
        "pending": sum(n for s, n in states.items() if s not in FINAL),
        "failed_by_reason": dict(failed),
        "undelivered_by_reason": dict(expired),
        "estimated": str(sum((m.cost for m in rows), Decimal(0)).quantize(Decimal("0.01"))),
        "billed": str(billed.quantize(Decimal("0.01"))),
        "split": {k: (v["messages"], v[MessageState.DELIVERED]) for k, v in split.items()},
    }


@pytest.mark.parametrize("seed", [1, 2])
def test_flow_report_agrees_with_plain_python(marketer: Any, seed: int, monkeypatch: Any) -> None:
    # Small id blocks and few blocks per run: the flow's messages span many blocks and several runs.
    monkeypatch.setattr(aggregates, "FLOW_CHUNK_IDS", 4)
    monkeypatch.setattr(aggregates, "MAX_FLOW_CHUNKS_PER_RUN", 3)
    f = _random_flow(seed)
    other = _random_flow(seed + 100)
    # A campaign's messages to the same numbers never count for the flow.
    c = campaign(owner=marketer, link=False)
    message(batch(c), contact(), at=T0)
    for _ in range(12):
        settle()
    report = flow_report_get(actor=actor(marketer), flow_id=f.pk)
    plain = _plain(f)
    m = report["messages"]
    assert (m["total"], m["delivered"], m["failed"], m["undelivered"], m["pending_receipts"]) == (
        plain["total"],
        plain["delivered"],
        plain["failed"],
        plain["undelivered"],
        plain["pending"],
    )
    assert m["failed_by_reason"] == plain["failed_by_reason"]
    assert m["undelivered_by_reason"] == plain["undelivered_by_reason"]
    assert report["cost"]["HKD"]["estimated"] == plain["estimated"]
    assert report["cost"]["HKD"]["billed"] == plain["billed"]
    split = {(r["gateway"], r["country"]): (r["messages"], r["delivered"]) for r in report["by_gateway_country"]}
    assert split == plain["split"]
    assert sum(b["delivered"] for b in report["trend"]) == plain["delivered"]
    assert report["clicks"]["tracked"] is False and report["conversions"]["attributed"] is False
    assert flow_report_get(actor=actor(marketer), flow_id=other.pk)["messages"]["total"] == _plain(other)["total"]
    # The campaign's report is untouched by flow messages.
    assert report_get(actor=actor(marketer), campaign_id=c.pk)["messages"]["total"] == 1


def test_refresh_is_incremental_and_follows_state_changes(marketer: Any) -> None:
    f = flow()
    person = contact()
    m = flow_message(f, person, at=T0, state=MessageState.SUBMITTED)
    settle()
    chunks = ReportFlowChunk.objects.count()
    assert chunks == 1
    assert flow_report_get(actor=actor(marketer), flow_id=f.pk)["messages"]["pending_receipts"] == 1
    # Nothing new and nothing due: the refresh reads no block.
    assert refresh_flow_messages() == 0
    # A state change without a receipt (an expiry) shows at the pending re-check.
    OutboundMessage.objects.filter(pk=m.pk).update(state=MessageState.FAILED, error_code="E9", final_at=T0)
    assert refresh_flow_messages(now=timezone.now() + timedelta(seconds=31)) == 1
    report = flow_report_get(actor=actor(marketer), flow_id=f.pk)
    assert (report["messages"]["failed"], report["messages"]["failed_by_reason"]) == (1, {"E9": 1})
    assert ReportFlowChunk.objects.get().pending == 0
    # A final block is not read again.
    assert refresh_flow_messages(now=timezone.now() + timedelta(minutes=10)) == 0
    assert ReportCursor.objects.get(name="flow_messages").position >= m.pk


def test_receipt_marks_the_flow_block(marketer: Any) -> None:
    from gateways.adapters.base import ReceiptEvent
    from gateways.delivery.receipts import receipts_ingest
    from gateways.models import MessagePart

    f = flow()
    m = flow_message(f, contact(), at=T0, state=MessageState.SUBMITTED)
    MessagePart.objects.create(message=m, part_number=1, provider_message_id="fp-1", gateway=m.gateway)
    settle()
    receipts_ingest(
        gateway=m.gateway,
        events=[ReceiptEvent(provider_message_id="fp-1", status=MessageState.DELIVERED, provider_status="DELIVRD")],
    )
    aggregates.refresh_all()
    report = flow_report_get(actor=actor(marketer), flow_id=f.pk)
    assert (report["messages"]["pending_receipts"], report["messages"]["delivered"]) == (0, 1)
    assert report["data_latency"]["newest_receipt_at"] is not None


def test_stop_after_a_flow_message_is_attributed_to_the_flow(marketer: Any) -> None:
    c = campaign(owner=marketer, link=False)
    f = flow()
    first, second, third = contact(), contact(), contact()
    message(batch(c), first, at=T0)
    flow_message(f, first, at=T0 + timedelta(hours=1))  # the latest message before the STOP
    message(batch(c), second, at=T0)  # only a campaign message
    flow_message(f, third, at=T0 - timedelta(days=30))  # outside the window
    for person in (first, second, third):
        OptOut.objects.create(
            phone=person.phone,
            reason=OptOutReason.STOP,
            source="sms:simulator",
            occurred_at=T0 + timedelta(hours=2),
            actor_channel="system",
        )
    settle()
    assert flow_report_get(actor=actor(marketer), flow_id=f.pk)["opt_outs"]["attributed"] == 1
    assert report_get(actor=actor(marketer), campaign_id=c.pk)["opt_outs"]["attributed"] == 1


def test_exactly_one_of_campaign_id_and_flow_id_on_mcp(marketer: Any) -> None:
    c = campaign(owner=marketer, link=False)
    f = flow()
    spec = get_tool("sms_marketing.campaign_reports.get")
    assert spec is not None
    assert "flow_id" in spec.input_schema["properties"]
    for args, field in (({}, "campaign_id"), ({"campaign_id": c.pk, "flow_id": f.pk}, "flow_id")):
        spec.validate_input(args)
        with pytest.raises(ApplicationError) as exc:
            spec.handler(actor(marketer), args)
        assert exc.value.code == "validation_error" and exc.value.field == field
        assert "campaign_id or flow_id" in exc.value.message
    out = spec.handler(actor(marketer), {"flow_id": f.pk})
    assert spec.output_problem(out) is None and out["scope"]["flow_id"] == f.pk
    assert spec.handler(actor(marketer), {"campaign_id": c.pk})["scope"]["campaign_id"] == c.pk
    with pytest.raises(ApplicationError) as missing:
        spec.handler(actor(marketer), {"flow_id": f.pk + 1000})
    assert missing.value.field == "flow_id" and missing.value.code == "not_found"


def _user_with(*codenames: str) -> Any:
    user = UserFactory.create()
    for name in codenames:
        app, codename = name.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app, codename=codename))
    return type(user).objects.get(pk=user.pk)


def test_permissions_and_field_errors_on_mcp_rest_and_admin(marketer: Any) -> None:
    f = flow()
    flow_message(f, contact("+85291234567"), at=T0)
    settle()
    report_only = _user_with("reporting.view_campaign_report")
    flow_only = _user_with("automations.view_flow")
    # MCP (the handler checks both permissions)
    spec = get_tool("sms_marketing.campaign_reports.get")
    assert spec is not None
    for user in (report_only, flow_only):
        with pytest.raises(ApplicationError) as exc:
            spec.handler(actor(user), {"flow_id": f.pk})
        assert exc.value.code == "permission_denied"
    # REST
    api = APIClient()
    api.force_authenticate(marketer)
    ok = api.get(f"/api/v1/automations/{f.pk}/report/?granularity=day")
    assert ok.status_code == 200, ok.content
    body = ok.json()
    assert body["messages"]["delivered"] == 1 and body["scope"]["flow_id"] == f.pk
    assert "91234567" not in ok.content.decode()
    both = api.get(f"/api/v1/automations/{f.pk}/report/?campaign_id=1")
    assert both.status_code == 400 and "campaign_id" in both.content.decode()
    assert api.get(f"/api/v1/automations/{f.pk + 1000}/report/").status_code == 404
    # The automations urls still answer beside the report.
    assert api.get(f"/api/v1/automations/{f.pk}/").status_code == 200
    for user in (report_only, flow_only, UserFactory.create()):
        api.force_authenticate(user)
        assert api.get(f"/api/v1/automations/{f.pk}/report/").status_code == 403
    # Admin
    web = Client()
    web.force_login(marketer)
    page = web.get(f"/admin/reporting/flowreport/{f.pk}/report/")
    assert page.status_code == 200
    assert b"<svg xmlns" in page.content and b"<polyline" in page.content and b"91234567" not in page.content
    assert b"Not attributed" in page.content and b"Not tracked" in page.content
    listing = web.get("/admin/reporting/flowreport/")
    assert listing.status_code == 200 and f"/admin/reporting/flowreport/{f.pk}/report/".encode() in listing.content
    for user in (report_only, flow_only):
        web.force_login(user)
        assert web.get(f"/admin/reporting/flowreport/{f.pk}/report/").status_code in (302, 403)


def test_a_reference_that_names_no_flow_is_not_counted(marketer: Any) -> None:
    f = flow()
    good = flow_message(f, contact(), at=T0)
    bad = flow_message(f, contact(), at=T0)
    OutboundMessage.objects.filter(pk=bad.pk).update(reference="automation:x:1:0")
    settle()
    assert flow_report_get(actor=actor(marketer), flow_id=f.pk)["messages"]["total"] == 1
    assert ReportFlowChunk.objects.get(chunk=good.pk // aggregates.FLOW_CHUNK_IDS).messages == 1
