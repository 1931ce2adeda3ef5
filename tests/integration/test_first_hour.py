"""The first hour, end to end, as the demo leaves the installation (issue 13).

seed_demo fills the test database (roles, demo users with their API tokens, the simulator gateway,
demo contacts, a segment and policies). The demo marketer, over MCP with the official Python client
(streamable HTTP, its demo token), previews the segment, fits the copy, drafts, previews the cost
and asks to send: the demo policy holds every campaign send for an approver. The demo approver, in
Debian's chromium driven by Playwright, reads the request page (copy, recipients, cost with its
currency, sender, when), finds the decision box inside a 1280 px viewport and clicks Approve. The
send goes out through the simulator gateway (Celery eager in tests: the approval's dispatch, its
submits and the simulator's receipts run on commit, then the batches are rolled up here as beat
does), and the marketer reads the batches, one phone's status, previews the failures and resends
the eligible ones. Screenshots: var/screenshots/first-hour-*.png.

Marker ``browser``: runs once with the real-process tests (``make test-celery``); skipped with the
reason when /usr/bin/chromium is absent.
"""

from __future__ import annotations

import io
import itertools
import json
import os
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from mcp import ClientSession

from campaigns.dispatch import batches_advance
from campaigns.models import BatchKind, Campaign, CampaignState
from compliance.models import ActionRequest, RequestState
from compliance.roles import Role
from contacts.models import Audience
from gateways.models import Gateway, MessageState, OutboundMessage
from gateways.platform_config import platform_config_update
from smsplatform.config_service import platform_config_get
from smsplatform.management.commands.seed_demo import demo_key
from tests.support.actors import actor
from tests.support.mcp import run, structured

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
COPY = "【Demo Shop】週末全場8折 Weekend sale 20% off {{link}} 回覆STOP退訂 Reply STOP to opt out"
UTM = {"utm_source": "sms", "utm_medium": "sms", "utm_campaign": "first-hour"}
DEMO_PASSWORD = "demo-pass-123"  # seed_demo's default
UNDELIVERED = {"+85259002001", "+85259002002"}  # the simulator's 'undelivered' prefix, in the demo contacts
OPTED_OUT = {"+85291000001", "+85291000002"}  # seed_demo's two STOPs

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK), reason=f"no {CHROMIUM}: apt-get install chromium (.ci/run does)"
    ),
]
_keys = itertools.count(1)


def key() -> str:
    return f"first-hour-{next(_keys):03d}"


def screenshot(page: Any, name: str) -> None:
    path = Path(settings.VAR_DIR) / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path / f"first-hour-{name}.png"), full_page=True)


def call(url: str, username: str, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    """One tool call as a demo user, in its own MCP session with the user's demo token."""

    async def body(session: ClientSession) -> dict[str, Any]:
        result = await session.call_tool(tool, args)
        answer = structured(result)
        assert not result.isError, (tool, answer)
        return dict(answer)

    return dict(run(url, demo_key(username), body))


@pytest.fixture
def demo_installation(make_user: Any) -> None:
    """seed_demo on the test database. Quiet hours off first (the demo sends to HK, and the test
    must not depend on the hour there); done before seed_demo, whose policy holds every settings
    change for an approver."""
    current = platform_config_get()
    schedule = {**current["config"]["schedule"], "quiet_hours": {}, "min_lead_minutes": 0}
    out = platform_config_update(
        actor=actor(make_user(Role.COMPLIANCE)),
        changes={"schedule": schedule},
        base_version_token=current["base_version_token"],
        idempotency_key=key(),
    )
    assert out["status"] == "executed", out
    Gateway.objects.filter(code="simulator").delete()  # the suite's placeholder; seed_demo makes the real one
    call_command("seed_demo", "--quiet", stdout=io.StringIO())


def test_the_first_hour_as_the_demo_roles(live_server: Any, demo_installation: None) -> None:
    url = f"{live_server.url}/mcp"
    marketer = "demo_marketing"
    audience = Audience.objects.get(name="Demo members")

    # 1. The marketer previews the segment: 40 demo members, the two who said STOP excluded.
    preview = call(url, marketer, "sms_marketing.segments.preview", {"criteria": {"audiences": [audience.pk]}})
    assert preview["matched"] == 40 and preview["sendable"] == 38, preview
    assert preview["exclusions"]["opted_out"] == 2, preview
    segment = call(
        url,
        marketer,
        "sms_marketing.segments.create",
        {"segment_preview_id": preview["segment_preview_id"], "name": "First hour", "idempotency_key": key()},
    )
    assert segment["status"] == "executed", segment

    # 2. The copy fits (UCS-2, the link's example inside), with the brand and the STOP wording.
    fit = call(
        url,
        marketer,
        "sms_marketing.copy.fit_preview",
        {
            "text": COPY,
            "brand": "Demo Shop",
            "fields": [{"name": "link", "type": "url", "max_length": 200, "example": "https://s.example/abc"}],
            "max_segments": 2,
            "countries": ["HK"],
        },
    )
    assert fit["fits"] is True and (fit["longest"]["encoding"], fit["longest"]["segments"]) == ("UCS-2", 2), fit
    assert not fit["required_wording_missing"], fit

    # 3. A per-recipient short link of its own, the draft (demo sender) and its cost, with the currency.
    link_preview = call(
        url,
        marketer,
        "sms_marketing.short_links.preview",
        {"url": "https://shop.example.com/first-hour", "utm": UTM, "per_recipient": True},
    )
    link = call(
        url,
        marketer,
        "sms_marketing.short_links.create",
        {"short_link_preview_id": link_preview["short_link_preview_id"], "idempotency_key": key()},
    )
    assert link["status"] == "executed", link
    link_id = link["result"]["short_link_id"]
    draft = call(
        url,
        marketer,
        "sms_marketing.campaigns.create_draft",
        {
            "name": "First hour sale",
            "segment_id": segment["result"]["segment_id"],
            "text": COPY,
            "brand": "Demo Shop",
            "short_link_id": link_id,
            "sender_id": "#DEMOHK",
            "send_goal": "First hour: weekend visits",
            "idempotency_key": key(),
        },
    )
    assert draft["status"] == "executed", draft
    campaign_id = draft["result"]["campaign_id"]
    assert draft["result"]["recipients"] == 38
    cost = call(url, marketer, "sms_marketing.cost_preview", {"campaign_id": campaign_id})
    assert cost["sendable"] == 38 and cost["exclusions"]["opted_out"] == 2, cost
    assert cost["estimated_cost"] == {"HKD": "26.60"}, cost  # 38 recipients x 2 UCS-2 parts x 0.35 (demo rate)
    currency, amount = "HKD", "26.60"
    assert cost["quota"]["within"] is True, cost

    # 4. Send: the demo policy holds every campaign send for an approver.
    held = call(
        url,
        marketer,
        "sms_marketing.campaigns.send_approved",
        {
            "campaign_id": campaign_id,
            "base_version_token": draft["result"]["base_version_token"],
            "reason": "First hour: weekend sale to the demo members",
            "idempotency_key": key(),
        },
    )
    assert held["status"] == "pending_approval" and held["required_role"] == "approver", held
    request_id = held["action_request_id"]
    assert not OutboundMessage.objects.filter(batch__campaign_id=campaign_id).exists()

    # 5. The approver, in chromium. No ORM until the browser is closed (Playwright's sync API runs
    #    an event loop in this thread).
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{live_server.url}/admin/login/?next=/admin/")
            page.fill("#id_username", "demo_approver")
            page.fill("#id_password", DEMO_PASSWORD)
            page.click("input[type=submit]")
            page.goto(f"{live_server.url}/admin/compliance/actionrequest/{request_id}/change/")

            assert "週末全場8折 Weekend sale 20% off" in page.locator("#request-copy").inner_text()
            assert page.locator("#request-sender").inner_text().strip() == "#DEMOHK"
            assert "38 when requested" in page.locator("#request-recipients").inner_text()
            assert f"{amount} {currency} when requested" in page.locator("#request-cost").inner_text()
            assert "Now, when approved" in page.locator("#request-schedule").inner_text()
            assert page.locator("#request-campaign-link").inner_text() == "First hour sale"

            decision = page.locator("#decision")
            decision.scroll_into_view_if_needed()
            box = decision.bounding_box()
            assert box is not None, "no decision box"
            assert box["x"] >= 0 and box["x"] + box["width"] <= 1280 and box["width"] >= 600, box
            approve = page.locator("#decision button[value=approve]")
            button = approve.bounding_box()
            assert button is not None and button["width"] > 40 and button["x"] + button["width"] <= 1280, button
            assert approve.is_visible() and approve.is_enabled()
            assert page.evaluate("document.documentElement.scrollWidth") <= 1280  # nothing scrolls sideways
            screenshot(page, "request")

            page.fill("#id_reason", "Copy, sender and cost checked")
            approve.click()
            page.wait_for_load_state()
            assert f"Request #{request_id} approved and executed." in page.locator("ul.messagelist").inner_text()
            assert page.locator("#decision").count() == 0
            screenshot(page, "approved")
        finally:
            browser.close()

    approver_id = get_user_model().objects.get(username="demo_approver").pk
    request = ActionRequest.objects.get(pk=request_id)
    assert request.state == RequestState.EXECUTED and request.decided_by_id == approver_id

    # 6. The send through the simulator: dispatch, submits and receipts ran eagerly on the approval's
    #    commit; beat's roll-up finishes the batches.
    batches_advance(budget_seconds=5)
    states = dict(OutboundMessage.objects.filter(batch__campaign_id=campaign_id).values_list("destination", "state"))
    assert len(states) == 38 and not set(states) & OPTED_OUT
    assert {d for d, s in states.items() if s == MessageState.FAILED} == UNDELIVERED, states
    assert {s for d, s in states.items() if d not in UNDELIVERED} == {MessageState.DELIVERED}
    campaign = Campaign.objects.get(pk=campaign_id)
    assert campaign.state == CampaignState.COMPLETED and campaign.approved_by_id == approver_id
    assert all(m.sender_id == "#DEMOHK" for m in OutboundMessage.objects.filter(batch__campaign_id=campaign_id))

    # 7. The marketer reads what happened.
    got = call(url, marketer, "sms_marketing.campaigns.get", {"campaign_id": campaign_id})
    assert got["state"] == CampaignState.COMPLETED
    assert (got["approval"]["approved_by"], got["approval"]["approved_by_username"]) == (approver_id, "demo_approver")
    report = call(url, marketer, "sms_marketing.send_batches.list", {"campaign_id": campaign_id})
    assert sum(b["delivered"] for b in report["batches"]) == 36, report
    assert sum(b["failed"] for b in report["batches"]) == 2, report
    assert report["currency"] == "HKD" and float(report["charged_total"]) > 0, report
    phone = sorted(UNDELIVERED)[0]
    status = call(url, marketer, "sms_marketing.delivery_status.get", {"phone": phone})
    (failed,) = status["messages"]
    assert failed["state"] == "failed" and failed["resend"]["eligible"] is True, failed
    assert status["phones_masked"] is True and phone not in json.dumps(status)

    # 8. Failures previewed, then the eligible ones resent from the preview id.
    retry = call(url, marketer, "sms_marketing.failed_messages.retry_preview", {"campaign_id": campaign_id})
    assert retry["failed"] == 2 and retry["eligible"] == 2, retry
    resent = call(
        url,
        marketer,
        "sms_marketing.failed_messages.resend",
        {"retry_preview_id": retry["retry_preview_id"], "idempotency_key": key()},
    )
    assert resent["status"] == "executed" and resent["result"]["resent"] == 2, resent
    batches_advance(budget_seconds=5)
    resends = OutboundMessage.objects.filter(resend_of__isnull=False)
    assert {m.destination for m in resends} == UNDELIVERED
    assert all(m.batch is not None and m.batch.kind == BatchKind.RESEND for m in resends)
    assert {m.state for m in resends} == {MessageState.FAILED}  # the same simulated handsets fail again
