"""An approver's first decision, in a real browser (Debian's chromium driven by Playwright).

Logs into the admin as the approver, opens a pending campaign send request, checks at 1280, 1400 and
1920 px (and a phone's width) that the decision box lies inside the viewport and is wide enough to use,
that the page says what the send will do (the copy, recipients and cost with currency, sender, when),
then approves it and sees the result. Screenshots go to var/screenshots/.

Run once, with the real-process tests (``make test-celery``, marker ``browser``); skipped with the
reason when /usr/bin/chromium is absent (``apt-get install chromium``; .ci/run installs it). No browser
build is downloaded: Playwright launches the system's chromium by its path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from campaigns.models import Campaign, CampaignState
from campaigns.services import campaign_send_approved
from compliance.models import ActionRequest, RequestState
from tests.campaigns.test_admin import draft
from tests.support.campaigns import act, key

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP_WIDTHS = (1280, 1400, 1920)
PHONE = (390, 844)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK), reason=f"no {CHROMIUM}: apt-get install chromium (.ci/run does)"
    ),
]


def screenshots_dir() -> Path:
    path = Path(settings.VAR_DIR) / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_decision_box(page: Any, width: int, height: int, *, min_width: int) -> None:
    page.set_viewport_size({"width": width, "height": height})
    page.reload()
    decision = page.locator("#decision")
    decision.scroll_into_view_if_needed()
    box = decision.bounding_box()
    assert box is not None, "no decision box"
    assert box["x"] >= 0 and box["x"] + box["width"] <= width, (width, box)
    assert box["width"] >= min_width, (width, box)
    # Usable: the reason field and both buttons are inside the viewport, nothing scrolls sideways.
    for selector in ("#id_reason", "button[value=approve]", "button[value=reject]"):
        part = page.locator(f"#decision {selector}").bounding_box()
        assert part is not None and part["width"] > 40 and part["x"] + part["width"] <= width, (selector, part)
    reason = page.locator("#id_reason").bounding_box()
    assert reason is not None and reason["width"] >= min(300, width - 60), reason
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    page.screenshot(path=str(screenshots_dir() / f"approval-request-{width}px.png"), full_page=True)


def test_approver_reads_and_approves_a_send_request_in_a_browser(
    live_server: Any, world: dict[str, Any], marketer: Any, approver_user: Any, send_policy: Any
) -> None:
    from playwright.sync_api import sync_playwright

    created = draft(world, marketer)
    held = campaign_send_approved(
        actor=act(marketer),
        campaign_id=created["campaign_id"],
        base_version_token=created["base_version_token"],
        idempotency_key=key("browser"),
        reason="Spring sale, all members",
    )
    assert held["status"] == "pending_approval", held
    request_id = held["action_request_id"]
    url = f"{live_server.url}/admin/compliance/actionrequest/{request_id}/change/"

    # No ORM below until the browser is closed: Playwright's sync API runs an event loop in this thread.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{live_server.url}/admin/login/?next=/admin/")
            page.fill("#id_username", approver_user.username)
            page.fill("#id_password", "test-pass-123")
            page.click("input[type=submit]")
            page.goto(url)

            review = page.locator("#request-review")
            assert "春季優惠全場8折" in page.locator("#request-copy").inner_text()
            assert page.locator("#request-sender").inner_text().strip() == "#SHOPHK"
            assert "4 when requested" in review.locator("#request-recipients").inner_text()
            assert "2.80 HKD when requested" in review.locator("#request-cost").inner_text()
            assert "Now, when approved" in review.locator("#request-schedule").inner_text()
            assert "https://shop.example.com/spring" in review.locator("#request-links").inner_text()
            assert page.locator("#request-campaign-link").inner_text() == "Spring sale"

            for width in DESKTOP_WIDTHS:
                check_decision_box(page, width, 900, min_width=600)
            check_decision_box(page, *PHONE, min_width=300)

            page.set_viewport_size({"width": 1280, "height": 900})
            page.reload()
            page.fill("#id_reason", "Copy, link and cost checked")
            page.click("#decision button[value=approve]")
            page.wait_for_load_state()
            assert f"Request #{request_id} approved and executed." in page.locator("ul.messagelist").inner_text()
            assert page.locator("#decision").count() == 0  # decided: no buttons any more
            page.screenshot(path=str(screenshots_dir() / "approval-request-approved.png"), full_page=True)
        finally:
            browser.close()

    request = ActionRequest.objects.get(pk=request_id)
    assert request.state == RequestState.EXECUTED and request.decided_by_id == approver_user.pk
    assert Campaign.objects.get(pk=created["campaign_id"]).state != CampaignState.PENDING_APPROVAL
