"""What the staff app's browser tests share: Debian's chromium launched by Playwright (never a
downloaded build), logging in, screenshots under var/screenshots/staff/, and the axe-core check
(axe-core from its npm package, tests/browser/node_modules: scripts/install_node_tools.sh)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE = Path(__file__).resolve().parent.parent / "browser" / "node_modules" / "axe-core" / "axe.min.js"
PASSWORD = "test-pass-123"
PHONE = {"width": 390, "height": 844}

BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK), reason=f"no {CHROMIUM}: apt-get install chromium (.ci/run does)"
    ),
]


def screenshots_dir() -> Path:
    path = Path(settings.VAR_DIR) / "screenshots" / "staff"
    path.mkdir(parents=True, exist_ok=True)
    return path


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(screenshots_dir() / f"{name}.png"), full_page=True)


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def staff_login(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/app/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit].primary")
    page.wait_for_url(f"{base}/app/")


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """Serious and critical axe-core violations on the page as it is now (WCAG 2.1 A/AA rules)."""
    if not AXE.exists():
        pytest.fail(f"{AXE} missing: run scripts/install_node_tools.sh (npm ci in tests/browser)")
    # Evaluated through the DevTools protocol: the page's CSP (no inline scripts) does not apply.
    page.evaluate(AXE.read_text() + "\n;void 0")
    result = page.evaluate(
        "async () => JSON.stringify(await axe.run(document, "
        "{runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}}))"
    )
    violations = json.loads(result)["violations"]
    return [
        {"id": v["id"], "impact": v["impact"], "help": v["help"], "nodes": [n["target"] for n in v["nodes"][:5]]}
        for v in violations
        if v["impact"] in ("serious", "critical")
    ]
