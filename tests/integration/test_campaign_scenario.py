"""Issue 6's full scenario through the official MCP client, the admin, beat and SMPP.

A CRM agent creates consented contacts; one of them replies STOP (an MO over SMPP from the SMSC
simulator, stored by the bind worker and handled by the keyword handler); a marketing agent
previews the segment, fits the copy, creates a per-recipient short link, drafts the campaign,
previews its cost and schedules it, which an approval policy holds; an approver approves it
in the admin's approval queue; django-celery-beat's DatabaseScheduler fires the one-off entry
at its clocked time; the bind worker submits every message to the SMSC simulator over SMPP and
records the receipts; the undelivered one is previewed and resent. Every claim about what
reached the handsets is checked against the simulator's own log of submit_sm PDUs, and the
opted-out phone is never in it.

Runs on SQLite and PostgreSQL (live_server). The bind worker runs in the test's thread with an
idle exit, so each send phase ends when everything queued is answered and receipted.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from typing import Any

import anyio
import httpx
import pytest
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from campaigns.models import BatchKind, BatchState, Campaign, CampaignState, SendBatch
from campaigns.tasks import advance_batches
from compliance.models import ActionRequest, ActionType, ApprovalPolicy, Condition, OptOut, RequestState
from compliance.roles import Role
from contacts.models import Audience, AudienceMembership
from gateways.models import Gateway, GatewayRate, InboundMessage, MessageState, OutboundMessage, Provider
from gateways.platform_config import platform_config_update
from gateways.quotas import account_instance
from gateways.smpp.worker import BindWorker, WorkerStats
from smsplatform.celery import app as celery_app
from smsplatform.config_service import platform_config_get
from tests.support.actors import actor
from tests.support.contacts import consent
from tests.support.smsc_setup import PASSWORD, SYSTEM_ID

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("known_gateways")]

PHONES = {
    "amy": "+85291000001",
    "ben": "+85291000002",
    "cat": "+85261000003",
    "stopper": "+85291000004",  # replies STOP before the campaign: never receives anything
    "throttled": "+85259001001",  # the SMSC refuses the first two submits (ESME_RTHROTTLED)
    "undelivered": "+85259002001",  # accepted, then an UNDELIV receipt: previewed and resent
    "invalid": "+85259000001",  # refused with ESME_RINVDSTADR: a hard failure, never resent
}
SIM = {name: phone.lstrip("+") for name, phone in PHONES.items()}  # as the SMSC logs destinations
LONG_COPY = (
    "【ShopHK】春季優惠！全場貨品一律八折，會員額外再減五十元，只限本週末，數量有限，售完即止。"
    "立即到門市或網店選購心水貨品，更多優惠詳情請瀏覽 {{link}} 回覆STOP退訂 Reply STOP to opt out"
)
COPY = "【ShopHK】春季優惠全場8折 {{link}} 回覆STOP退訂 Reply STOP to opt out"
SEND_DELAY = 8.0  # seconds between scheduling and the send time: the approval happens in between
_keys = itertools.count(1)


def key() -> str:
    return f"scenario-{next(_keys):05d}"


def call(url: str, token: str, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    """One tool call in its own MCP session (official client, streamable HTTP, bearer token)."""

    async def main() -> Any:
        with anyio.fail_after(60):
            return await session_call()

    async def session_call() -> Any:
        async with (
            httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
            streamable_http_client(url, http_client=http) as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            return await session.call_tool(tool, args)

    result = anyio.run(main)
    assert result.structuredContent is not None, result
    assert not result.isError, (tool, result.structuredContent)
    assert json.loads(result.content[0].text) == result.structuredContent
    return dict(result.structuredContent)


def run_worker(gateway: Gateway, idle: float = 1.5) -> WorkerStats:
    """The bind worker until nothing is queued, in flight or awaiting its receipt for ``idle`` s.

    On PostgreSQL it runs as in production: claims committed on this thread, answers written by
    its flush thread on a connection of its own. The SQLite test database is in memory, where a
    second connection cannot write while this one does (shared-cache table locks ignore the busy
    timeout), so there the worker runs inside one transaction, which keeps it on this thread."""
    worker = BindWorker(Gateway.objects.get(pk=gateway.pk), password=PASSWORD, flush_interval=0.05, poll_interval=0.05)
    single_threaded = transaction.atomic() if connection.vendor == "sqlite" else contextlib.nullcontext()
    with single_threaded:
        return worker.run(stop=threading.Event(), idle_exit_after=idle)


def accepted_by_destination(records: list[dict[str, Any]]) -> Counter[str]:
    """Messages the SMSC accepted, per destination: each concatenated message counted once, and
    only when every one of its parts was accepted exactly once."""
    parts: dict[tuple[str, Any], list[int]] = {}
    for r in records:
        if r["outcome"] == "accepted":
            parts.setdefault((r["destination"], r["concat_ref"]), []).append(r["concat_part"] or 1)
    for (destination, _ref), numbers in parts.items():
        assert sorted(numbers) == list(range(1, len(numbers) + 1)), (destination, numbers)
    return Counter(destination for destination, _ref in parts)


@pytest.fixture
def smpp_gateway(smsc: Any) -> Gateway:
    gateway = Gateway.objects.create(
        code="smpp-hk",
        name="SMPP HK",
        provider=Provider.SMPP,
        countries=["HK"],
        priority=1,
        window_size=10,
        max_rate_per_second=500,
        encodings=["GSM-7", "UCS-2"],
        settings={"host": smsc.host, "port": smsc.port, "system_id": SYSTEM_ID},
        credentials_env={"password": "TEST_SMPP_PASSWORD"},
    )
    GatewayRate.objects.create(gateway=gateway, country="HK", price_per_segment=Decimal("0.35"), currency="HKD")
    account = account_instance()
    account.balance, account.monthly_quota_segments = Decimal("1000"), 100_000
    account.save()
    return gateway


@pytest.fixture
def send_any_time(make_user: Any) -> None:
    """No quiet hours (the test must not depend on the hour in Hong Kong) and no minimum lead
    time (beat fires seconds after scheduling, not minutes)."""
    compliance_user = make_user(Role.COMPLIANCE)
    current = platform_config_get()
    schedule = {**current["config"]["schedule"], "quiet_hours": {}, "min_lead_minutes": 0}
    out = platform_config_update(
        actor=actor(compliance_user),
        changes={"schedule": schedule},
        base_version_token=current["base_version_token"],
        idempotency_key=key(),
    )
    assert out["status"] == "executed", out


def fire_beat_when_due(entry_name: str, campaign_id: int, timeout: float = 60.0) -> None:
    """Run django-celery-beat's DatabaseScheduler (the platform's beat scheduler) tick by tick, as
    ``celery beat`` does, until the campaign's one-off entry has run. Tasks are eager in tests,
    so each due entry's task runs here with the entry's own args."""
    celery_app.loader.import_default_modules()  # every task beat names runs here (eager), none is queued
    scheduler = DatabaseScheduler(app=celery_app)
    assert {entry.task for entry in scheduler.schedule.values()} <= set(celery_app.tasks)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            delay = scheduler.tick()
            if Campaign.objects.get(pk=campaign_id).state != CampaignState.SCHEDULED:
                return
            time.sleep(min(max(delay, 0.05), 0.25))
        raise AssertionError(f"beat did not fire {entry_name} within {timeout}s")
    finally:
        scheduler.sync()
        scheduler._finalize.cancel()  # no sync at garbage collection, after the test database is gone


def test_campaign_from_contacts_to_receipts_and_a_resend(
    live_server: Any, make_user: Any, token_for: Any, smsc: Any, smpp_gateway: Gateway, send_any_time: None
) -> None:
    url = f"{live_server.url}/mcp"
    crm, marketer = make_user(Role.CRM), make_user(Role.MARKETING)
    approver = make_user(Role.APPROVER, username="approver-scenario")
    crm_key, marketer_key = token_for(crm), token_for(marketer)
    ApprovalPolicy.objects.create(
        action=ActionType.CAMPAIGN_SCHEDULE,
        condition=Condition.ALWAYS,
        approver_role=Group.objects.get(name=Role.APPROVER),
    )

    # 1. Contacts with consent evidence (CRM agent, MCP). The CRM list they belong to is synced
    #    outside the tool catalogue, so membership is written directly.
    ids = {}
    for name, phone in PHONES.items():
        out = call(
            url,
            crm_key,
            "sms_marketing.contacts.upsert",
            {"phone": phone, "source": "crm", "tags": ["spring"], "consent": consent(), "idempotency_key": key()},
        )
        assert out["status"] == "executed", out
        ids[name] = out["result"]["contact_id"]
    members = Audience.objects.create(name="Spring members", source="crm", region="HK")
    AudienceMembership.objects.bulk_create([AudienceMembership(audience=members, contact_id=i) for i in ids.values()])

    # 2. One of them replies STOP: an MO over SMPP, received by the bind worker, handled by the
    #    keyword handler inside gateways.delivery.inbound.inbound_receive.
    smsc.inject_mo(SIM["stopper"], "SHOPHK", "STOP", wait=False)
    stats = run_worker(smpp_gateway, idle=1.0)
    assert stats.inbound == 1 and stats.claimed_messages == 0
    (inbound,) = InboundMessage.objects.all()
    assert inbound.source == PHONES["stopper"] and inbound.body == "STOP"
    assert (inbound.handler_result or {})["inbound_keyword_handler"]["kind"] == "stop"
    assert OptOut.objects.get(phone=PHONES["stopper"], lifted_at__isnull=True).reason == "stop"
    found = call(url, crm_key, "sms_marketing.contacts.search", {"phone": PHONES["stopper"]})
    assert found["contacts"][0]["opted_out"] is True and found["contacts"][0]["sendable"] is False

    # 3. Segment preview (counts and every exclusion), then the segment from the preview id only.
    criteria = {"all": [{"audiences": [members.pk]}, {"tags": {"any": ["spring"]}}]}
    preview = call(url, marketer_key, "sms_marketing.segments.preview", {"criteria": criteria})
    assert preview["matched"] == 7 and preview["sendable"] == 6
    assert preview["exclusions"]["opted_out"] == 1
    created = call(
        url,
        marketer_key,
        "sms_marketing.segments.create",
        {"segment_preview_id": preview["segment_preview_id"], "name": "Spring members", "idempotency_key": key()},
    )
    assert created["status"] == "executed", created
    segment_id = created["result"]["segment_id"]

    # 4. Fit the copy: the long version does not fit two UCS-2 parts with the link, the short one does.
    link_field = {"name": "link", "type": "url", "max_length": 200, "example": "https://shop.example.com/spring"}
    fit_args = {
        "brand": "ShopHK",
        "fields": [link_field],
        "max_segments": 2,
        "per_recipient_links": True,
        "countries": ["HK"],
    }
    too_long = call(url, marketer_key, "sms_marketing.copy.fit_preview", {"text": LONG_COPY, **fit_args})
    fits = call(url, marketer_key, "sms_marketing.copy.fit_preview", {"text": COPY, **fit_args})
    assert too_long["fits"] is False and too_long["longest"]["segments"] == 3
    assert fits["fits"] is True
    assert (fits["longest"]["encoding"], fits["longest"]["segments"]) == ("UCS-2", 2)
    assert not fits["required_wording_missing"] and fits["short_links"]["per_recipient"] is True

    # 5. A per-recipient short link: preview, then create from the preview id.
    link_preview = call(
        url,
        marketer_key,
        "sms_marketing.short_links.preview",
        {
            "url": "https://shop.example.com/spring",
            "utm": {"utm_source": "sms", "utm_medium": "sms", "utm_campaign": "spring"},
            "per_recipient": True,
        },
    )
    link = call(
        url,
        marketer_key,
        "sms_marketing.short_links.create",
        {"short_link_preview_id": link_preview["short_link_preview_id"], "idempotency_key": key()},
    )
    assert link["status"] == "executed", link
    short_url = link["result"]["short_url"]

    # 6. Draft and cost preview.
    draft = call(
        url,
        marketer_key,
        "sms_marketing.campaigns.create_draft",
        {
            "name": "Spring sale",
            "segment_id": segment_id,
            "text": COPY,
            "brand": "ShopHK",
            "short_link_id": link["result"]["short_link_id"],
            "sender_id": "#SHOPHK",
            "send_goal": "Spring sale visits",
            "idempotency_key": key(),
        },
    )
    assert draft["status"] == "executed", draft
    campaign_id = draft["result"]["campaign_id"]
    assert draft["result"]["recipients"] == 6 and draft["result"]["segments_per_message"] == 2
    cost = call(url, marketer_key, "sms_marketing.cost_preview", {"campaign_id": campaign_id})
    assert cost["sendable"] == 6 and cost["unsendable"] == 1 and cost["exclusions"]["opted_out"] == 1
    assert cost["estimated_cost"] == {"HKD": "4.20"}  # 6 recipients x 2 segments x 0.35
    assert cost["quota"]["within"] is True

    # 7. Schedule: the approval policy holds it; nothing is on beat's schedule yet.
    send_at = timezone.now() + timedelta(seconds=SEND_DELAY)
    held = call(
        url,
        marketer_key,
        "sms_marketing.campaigns.schedule",
        {
            "campaign_id": campaign_id,
            "base_version_token": draft["result"]["base_version_token"],
            "send_at": send_at.isoformat(),
            "batch_size": 2,
            "batch_interval_seconds": 0,
            "idempotency_key": key(),
        },
    )
    assert held["status"] == "pending_approval", held
    got = call(url, marketer_key, "sms_marketing.campaigns.get", {"campaign_id": campaign_id})
    assert got["state"] == CampaignState.PENDING_APPROVAL
    entry_name = f"campaign:{campaign_id}"
    assert not PeriodicTask.objects.filter(name=entry_name).exists()

    # 8. The approver decides in the admin's approval queue (the requester could not).
    request_id = held["action_request_id"]
    admin = Client()
    admin.force_login(approver)
    page = admin.get(reverse("admin:compliance_actionrequest_change", args=[request_id]))
    decide_url = reverse("admin:compliance_actionrequest_decide", args=[request_id])
    assert page.status_code == 200 and decide_url in page.content.decode()
    decided = admin.post(decide_url, {"decision": "approve", "reason": "Copy and cost checked"})
    assert decided.status_code == 302
    assert ActionRequest.objects.get(pk=request_id).state == RequestState.EXECUTED
    campaign = Campaign.objects.get(pk=campaign_id)
    assert campaign.state == CampaignState.SCHEDULED and campaign.approved_by_id == approver.pk
    entry = PeriodicTask.objects.get(name=entry_name)
    assert entry.enabled and entry.one_off and entry.clocked is not None
    assert entry.clocked.clocked_time == campaign.send_at and json.loads(entry.args) == [campaign_id, campaign.version]
    assert not OutboundMessage.objects.filter(batch__campaign_id=campaign_id).exists()

    # 9. Beat fires the one-off entry at its clocked time, not before; dispatch writes the messages.
    fire_beat_when_due(entry_name, campaign_id)
    entry.refresh_from_db()
    assert entry.total_run_count == 1 and entry.last_run_at is not None  # beat ran it once
    campaign.refresh_from_db()
    assert campaign.state == CampaignState.SENDING
    assert campaign.dispatched_at is not None and campaign.dispatched_at >= send_at  # at its time, not before
    messages = {m.destination: m for m in OutboundMessage.objects.filter(batch__campaign_id=campaign_id)}
    assert set(messages) == set(PHONES.values()) - {PHONES["stopper"]}
    assert SendBatch.objects.filter(campaign_id=campaign_id, kind=BatchKind.INITIAL).count() == 3

    # 10. The bind worker submits them over SMPP; receipts come back.
    stats = run_worker(smpp_gateway)
    assert stats.claimed_messages == 6 and stats.unknown_messages == 0 and stats.throttled >= 2
    advance_batches.apply().get(disable_sync_subtasks=False)  # beat's periodic roll-up
    states = dict(OutboundMessage.objects.filter(batch__campaign_id=campaign_id).values_list("destination", "state"))
    assert states == {
        PHONES["amy"]: MessageState.DELIVERED,
        PHONES["ben"]: MessageState.DELIVERED,
        PHONES["cat"]: MessageState.DELIVERED,
        PHONES["throttled"]: MessageState.DELIVERED,
        PHONES["undelivered"]: MessageState.FAILED,
        PHONES["invalid"]: MessageState.FAILED,
    }
    assert Campaign.objects.get(pk=campaign_id).state == CampaignState.COMPLETED
    assert set(SendBatch.objects.filter(campaign_id=campaign_id).values_list("state", flat=True)) == {
        BatchState.COMPLETED
    }
    first_send = smsc.submitted()
    accepted = [r for r in first_send if r["outcome"] == "accepted"]
    assert accepted_by_destination(first_send) == Counter(
        SIM[n] for n in ("amy", "ben", "cat", "throttled", "undelivered")
    )
    throttled = Counter(r["outcome"] for r in first_send if r["destination"] == SIM["throttled"])
    assert throttled == {"refused": 2, "accepted": 2}  # two refusals, then each of its two parts once
    assert {r["status_name"] for r in first_send if r["destination"] == SIM["invalid"]} == {"ESME_RINVDSTADR"}
    # What reached the SMSC is the rendered copy with each recipient's own short-link URL.
    for record in accepted:
        body = messages[f"+{record['destination']}"].body
        assert record["source"] == "#SHOPHK" and short_url in body
    texts = {r["destination"]: "" for r in accepted}
    for record in sorted(accepted, key=lambda r: (r["destination"], r["concat_part"] or 0)):
        texts[record["destination"]] += record["text"]
    assert texts == {d: messages[f"+{d}"].body for d in texts}
    assert len({messages[f"+{d}"].body for d in texts}) == len(texts)  # one token per recipient

    # 11. Batches and per-phone status over MCP.
    report = call(url, marketer_key, "sms_marketing.send_batches.list", {"campaign_id": campaign_id})
    assert sum(b["delivered"] for b in report["batches"]) == 4
    status = call(url, marketer_key, "sms_marketing.delivery_status.get", {"phone": PHONES["undelivered"]})
    (failed,) = status["messages"]
    assert failed["state"] == "failed" and failed["resend"]["eligible"] is True
    assert status["phones_masked"] is True and PHONES["undelivered"] not in json.dumps(status)

    # 12. The failure is previewed (the hard failure is not eligible) and resent from the preview id.
    retry = call(url, marketer_key, "sms_marketing.failed_messages.retry_preview", {"campaign_id": campaign_id})
    assert retry["failed"] == 2 and retry["eligible"] == 1
    assert retry["excluded"] == {"hard_failure": 1}
    resent = call(
        url,
        marketer_key,
        "sms_marketing.failed_messages.resend",
        {"retry_preview_id": retry["retry_preview_id"], "idempotency_key": key()},
    )
    assert resent["status"] == "executed" and resent["result"]["resent"] == 1, resent
    stats = run_worker(smpp_gateway)
    assert stats.claimed_messages == 1
    resend = OutboundMessage.objects.get(resend_of__isnull=False)
    assert resend.resend_of_id == messages[PHONES["undelivered"]].pk and resend.state == MessageState.FAILED
    assert resend.batch is not None and resend.batch.kind == BatchKind.RESEND

    # 13. What the SMSC received, from its own log: one accepted submit per message (the resend is
    #     a new message, linked to the original), and nothing at all for the phone that said STOP.
    log = smsc.submitted()
    counts = accepted_by_destination(log)
    assert counts == Counter({SIM["amy"]: 1, SIM["ben"]: 1, SIM["cat"]: 1, SIM["throttled"]: 1, SIM["undelivered"]: 2})
    assert SIM["stopper"] not in {r["destination"] for r in log}
    assert not OutboundMessage.objects.filter(destination=PHONES["stopper"]).exists()
