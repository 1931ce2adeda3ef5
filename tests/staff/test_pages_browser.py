"""Every staff page in a real browser: axe-core (from its npm package, injected into the page) finds
no serious or critical violation, on a desktop and a phone screen, in English and in Traditional
Chinese; nothing scrolls sideways on the phone; the page raises no script error (the CSP allows no
inline script). Screenshots go to var/screenshots/staff/pages/.

Marker ``browser``; skipped with the reason without /usr/bin/chromium.
"""

from __future__ import annotations

from typing import Any

from campaigns.dispatch import batches_advance
from campaigns.services import campaign_send_approved
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
    }
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
            staff_login(page, live_server.url, marketer.username)
            for language in ("en", "zh-hant"):
                if language != "en":
                    page.goto(f"{live_server.url}/app/")
                    page.click(f"form.lang button[value={language}]")
                    page.wait_for_load_state("networkidle")
                    assert page.locator("html").get_attribute("lang") == "zh-Hant"
                for name, path in pages.items():
                    for label, viewport in (("desktop", {"width": 1280, "height": 900}), ("phone", PHONE)):
                        page.set_viewport_size(viewport)
                        page.goto(f"{live_server.url}{path}")
                        page.wait_for_load_state("networkidle")
                        found = axe_violations(page)
                        if found:
                            problems[f"{name} {language} {label}"] = found
                        width = page.evaluate("document.documentElement.scrollWidth")
                        if width > viewport["width"]:
                            problems[f"{name} {language} {label} scroll"] = width
                        page.screenshot(path=str(out / f"{name}-{language}-{label}.png"), full_page=True)
            assert errors == [], errors
        finally:
            browser.close()
    assert problems == {}, problems
