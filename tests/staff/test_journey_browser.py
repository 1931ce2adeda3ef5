"""The staff app's journey in a real browser (issue 19): a marketer composes a campaign with
Traditional Chinese copy and an emoji (the live counter shows UCS-2 and the parts), previews the
segment, inserts a short link and submits; the send is held for approval; an approver approves it in
the admin; the marketer watches the live progress reach delivered; the opted-out contact never
receives it. Screenshots of each step go to var/screenshots/staff/.

Marker ``browser`` (run by ``make test-celery`` / .ci/run); skipped with the reason without
/usr/bin/chromium.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from campaigns.dispatch import batches_advance
from campaigns.models import Campaign
from compliance.models import ActionRequest, RequestState
from gateways.models import MessageState, OutboundMessage
from tests.staff.browser import BROWSER_MARKS, PASSWORD, PHONE, launch, shot, staff_login
from tests.support.campaigns import PHONES

pytestmark = BROWSER_MARKS

COPY = "【ShopHK】春季優惠全場8折 🌸 {{link}} 回覆STOP退訂 Reply STOP to opt out"


def advance_in_thread(stop: threading.Event) -> threading.Thread:
    """The send's batches are worked by a worker in production; here a thread does what the worker
    does (batches_advance), away from Playwright's event loop."""

    def run() -> None:
        from django.db import connection

        try:
            while not stop.is_set():
                batches_advance(budget_seconds=1)
                stop.wait(0.3)
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_marketer_composes_approver_approves_marketer_watches_delivery(
    live_server: Any, world: dict[str, Any], marketer: Any, approver_user: Any, send_policy: Any
) -> None:
    from playwright.sync_api import expect, sync_playwright

    base = live_server.url
    stop = threading.Event()
    worker: threading.Thread | None = None
    # No ORM in this thread while the browser runs: Playwright's sync API runs an event loop here.
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport=PHONE)
            page_errors: list[str] = []
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            staff_login(page, base, marketer.username)
            page.goto(f"{base}/app/campaigns/new/")
            shot(page, "01-composer-empty")

            page.fill("#id_name", "Spring sale")
            page.select_option("#id_pick", f"segment:{world['segment_id']}")
            expect(page.locator("#segment-sendable")).to_have_text("4")
            expect(page.locator("#segment-exclusions tr[data-reason=opted_out] td").nth(1)).to_have_text("1")
            shot(page, "02-segment-previewed")

            page.fill("#id_brand", "ShopHK")
            page.locator("#id_text").fill(COPY.replace(" {{link}}", ""))
            expect(page.locator("#fit-encoding")).to_have_text("UCS-2")
            expect(page.locator("#fit-ucs2-reasons")).to_contain_text("🌸")
            parts_before = int(page.locator("#fit-segments").inner_text())
            assert parts_before >= 1
            shot(page, "03-copy-counted")

            page.fill("#id_url", "https://shop.example.com/spring")
            page.fill("#id_utm_campaign", "spring")
            page.click("#link-preview")
            expect(page.locator("#link-preview-result")).to_contain_text("https://shop.example.com/spring")
            shot(page, "04-link-previewed")
            page.click("#link-create")
            expect(page.locator("#link-created")).to_be_visible()
            expect(page.locator("#id_text")).to_have_value(re.compile(r"\{\{link\}\}"))
            # The counter recounts with the link inserted (counted as the short URL it is sent as).
            expect(page.locator("#fit-result")).to_have_attribute("data-encoding", "UCS-2")
            expect(page.locator("#fit-cost-HK")).to_contain_text("HKD")
            shot(page, "05-link-inserted")

            page.fill("#id_sender_id", "#SHOPHK")
            page.fill("#id_reason", "Spring sale, all members")
            page.check("input[name=send_mode][value=send]")
            # The cost preview before the submit: cost_preview's figures for the draft as it stands.
            page.click("#cost-preview-button")
            expect(page.locator("#cost-by-country tr[data-country=HK]")).to_be_visible()
            expect(page.locator("#cost-total")).to_contain_text("HKD")
            shot(page, "05b-cost-previewed")
            page.click("#submit")
            answers = page.locator("#governance-answers")
            expect(answers.locator("li[data-step=create]")).to_have_attribute("data-status", "executed")
            held = answers.locator("li[data-step=send]")
            expect(held).to_have_attribute("data-status", "pending_approval")
            expect(held.locator(".request-state")).to_have_text("pending")
            request_id = int(held.locator(".request-id").inner_text())
            shot(page, "06-submitted-held-for-approval")
            campaign_url = page.locator("#to-campaign").get_attribute("href")
            assert campaign_url

            approver = browser.new_page(viewport={"width": 1280, "height": 900})
            approver.goto(f"{base}/admin/login/?next=/admin/")
            approver.fill("#id_username", approver_user.username)
            approver.fill("#id_password", PASSWORD)
            approver.click("input[type=submit]")
            approver.goto(f"{base}/admin/compliance/actionrequest/{request_id}/change/")
            assert "春季優惠全場8折" in approver.locator("#request-copy").inner_text()
            approver.fill("#id_reason", "Copy, link and cost checked")
            approver.click("#decision button[value=approve]")
            approver.wait_for_load_state()
            assert f"Request #{request_id} approved and executed." in approver.locator("ul.messagelist").inner_text()
            shot(approver, "07-approved-in-admin")

            worker = advance_in_thread(stop)
            page.goto(f"{base}{campaign_url}")
            shot(page, "08-progress")
            delivered = page.locator("#progress li[data-state=delivered] .count")
            expect(delivered).to_have_text("3", timeout=30_000)  # a, b, c; the undelivered number fails
            expect(page.locator("#progress li[data-state=failed] .count")).to_have_text("1", timeout=30_000)
            shot(page, "09-progress-delivered")
            assert page_errors == [], page_errors
        finally:
            stop.set()
            if worker is not None:
                worker.join(timeout=10)
            browser.close()

    request = ActionRequest.objects.get(pk=request_id)
    assert request.state == RequestState.EXECUTED and request.decided_by_id == approver_user.pk
    campaign = Campaign.objects.get(pk=int(campaign_url.rstrip("/").rsplit("/", 1)[-1]))
    messages = OutboundMessage.objects.filter(batch__campaign=campaign)
    assert messages.filter(state=MessageState.DELIVERED).count() == 3
    # The opted-out contact never receives it.
    assert not messages.filter(destination=PHONES["stopped"]).exists()
    assert campaign.created_by_id == marketer.pk
