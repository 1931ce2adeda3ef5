"""Every staff page in a real browser: axe-core (from its npm package, injected into the page) finds
no serious or critical violation, on a desktop and a phone screen, in English and in Traditional
Chinese; nothing scrolls sideways on the phone; the page raises no script error (the CSP allows no
inline script). Screenshots go to var/screenshots/staff/pages/.

Marker ``browser``; skipped with the reason without /usr/bin/chromium.
"""

from __future__ import annotations

from typing import Any

from campaigns.automations.flow_models import Flow
from campaigns.dispatch import batches_advance
from campaigns.otp.models import OtpTemplate
from campaigns.otp.services import otp_template_save
from campaigns.services import campaign_send_approved
from compliance.roles import Role
from reporting.aggregates import refresh_all
from reporting.models import InboxItem, NotificationSubject, ReviewNotification
from templates.models import Template
from tests.campaigns.test_admin import draft
from tests.staff.browser import BROWSER_MARKS, PHONE, axe_violations, launch, screenshots_dir, staff_login
from tests.support.campaigns import act, key
from tests.support.templates import save as template_save

pytestmark = BROWSER_MARKS


def test_every_page_passes_axe_and_fits_a_phone(
    live_server: Any,
    world: dict[str, Any],
    marketer: Any,
    approver_user: Any,
    make_user: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    from playwright.sync_api import sync_playwright

    created = draft(world, marketer)
    with django_capture_on_commit_callbacks(execute=True):
        campaign_send_approved(
            actor=act(approver_user),
            campaign_id=created["campaign_id"],
            base_version_token=created["base_version_token"],
            confirm=True,
            idempotency_key=key("pages"),
        )
    batches_advance(budget_seconds=5)
    batches_advance(budget_seconds=5)
    saved = template_save(marketer)
    assert saved["status"] == "executed", saved
    template_id = Template.objects.values_list("pk", flat=True).first()
    campaign_id = created["campaign_id"]
    contact_id = world["contacts"]["a"]
    refresh_all()
    refresh_all()  # the report's aggregates (two runs: id cursors)
    flow = Flow.objects.create(
        name="Shipped notice",
        purpose="transactional",
        trigger_event_types=["order_shipped"],
        steps=[{"kind": "wait", "minutes": 30}, {"kind": "send"}],
        created_by=marketer,
        updated_by=marketer,
    )
    notification = ReviewNotification.objects.create(
        kind="cost_anomaly",
        subject_kind=NotificationSubject.CAMPAIGN,
        campaign_id=campaign_id,
        title="Cost above the estimate",
        body="Please review.",
        recipients=[marketer.username],
        sent_by=approver_user,
        actor_channel="form",
    )
    InboxItem.objects.create(notification=notification, user=marketer)
    compliance_user = make_user(Role.COMPLIANCE, username="compliance-pages")
    held = otp_template_save(
        actor=act(compliance_user),
        idempotency_key=key("otp-pages"),
        content={
            "name": "Login code",
            "purpose": "login",
            "body_en": "Your ShopHK code is {code}. Valid for {minutes} minutes.",
            "body_zh_hant": "你的ShopHK驗證碼是{code}，{minutes}分鐘內有效。",
            "allowed_countries": ["HK"],
            "sender_id": "#SHOPHK",
        },
    )
    assert held["status"] == "pending_approval", held
    otp_template_id = OtpTemplate.objects.values_list("pk", flat=True).get()
    pages = {
        "home": "/app/",
        "campaigns": "/app/campaigns/",
        "compose": f"/app/campaigns/new/?segment_id={world['segment_id']}",
        "campaign": f"/app/campaigns/{campaign_id}/",
        "retry": f"/app/campaigns/{campaign_id}/retry/",
        "contacts": "/app/contacts/?tag=member",
        "contact": f"/app/contacts/{contact_id}/",
        "import": "/app/contacts/import/",
        "templates": "/app/templates/",
        "template": f"/app/templates/{template_id}/",
        "automations": "/app/automations/",
        "flow": f"/app/automations/{flow.pk}/",
        "dry-run": f"/app/automations/{flow.pk}/dry-run/?days=7",
        "flow-new": "/app/automations/new/",
        "flow-edit": f"/app/automations/{flow.pk}/edit/",
        "reports": "/app/reports/",
        "report": f"/app/reports/{campaign_id}/",
        "attribution": f"/app/reports/{campaign_id}/attribution/",
        "inbox": "/app/inbox/",
    }
    # The OTP pages need an OTP role (compliance): checked logged in as one.
    otp_pages = {
        "otp-templates": "/app/otp/",
        "otp-template": f"/app/otp/{otp_template_id}/",
        "otp-new": "/app/otp/new/",
        "verifications": "/app/otp/verifications/",
    }
    opened = {*list(pages)[-9:], *otp_pages}
    out = screenshots_dir() / "pages"
    out.mkdir(exist_ok=True)
    problems: dict[str, Any] = {}
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{live_server.url}/app/login/")
            if found := axe_violations(page):
                problems["login"] = found
            for username, checked in ((marketer.username, pages), (compliance_user.username, otp_pages)):
                staff_login(page, live_server.url, username)
                for language in ("en", "zh-hant"):
                    page.goto(f"{live_server.url}/app/")
                    page.click(f"form.lang button[value={language}]")
                    page.wait_for_load_state("networkidle")
                    expected = "zh-Hant" if language != "en" else "en"
                    assert page.locator("html").get_attribute("lang") == expected
                    for name, path in checked.items():
                        for label, viewport in (("desktop", {"width": 1280, "height": 900}), ("phone", PHONE)):
                            page.set_viewport_size(viewport)
                            response = page.goto(f"{live_server.url}{path}")
                            if name in opened:  # the pages this check was extended with open, not refuse
                                assert response is not None and response.status == 200, (name, path)
                            page.wait_for_load_state("networkidle")
                            found = axe_violations(page)
                            if found:
                                problems[f"{name} {language} {label}"] = found
                            width = page.evaluate("document.documentElement.scrollWidth")
                            if width > viewport["width"]:
                                problems[f"{name} {language} {label} scroll"] = width
                            page.screenshot(path=str(out / f"{name}-{language}-{label}.png"), full_page=True)
                page.set_viewport_size({"width": 1280, "height": 900})
                page.click("form.logout button")
                page.wait_for_load_state("networkidle")
            assert errors == [], errors
        finally:
            browser.close()
    assert problems == {}, problems
