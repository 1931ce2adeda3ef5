"""The public default key never runs outside debug, `check --deploy` says so, and HTTPS
deployments send HSTS and a Content-Security-Policy (issue 14, item 3)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_") and k != "SMS_CONTENT_SECURITY_POLICY"}
    base["DJANGO_SETTINGS_MODULE"] = "smsplatform.settings"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=120
    )


SETUP = "import django; django.setup(); from django.conf import settings; "


def test_refuses_to_start_outside_debug_with_the_default_key() -> None:
    result = _run(SETUP + "print('started')")
    assert result.returncode != 0 and "started" not in result.stdout
    assert "refusing to start with the public default key" in result.stderr
    # An empty variable is no key either.
    assert _run(SETUP + "print('started')", DJANGO_SECRET_KEY="  ").returncode != 0


def test_debug_and_a_real_key_both_start() -> None:
    assert _run(SETUP + "print('started')", DJANGO_DEBUG="1").stdout.strip() == "started"
    assert _run(SETUP + "print('started')", DJANGO_SECRET_KEY="k" * 50).stdout.strip() == "started"


CHECK = "from django.core.management import call_command; call_command('check', '--deploy', '--fail-level', 'ERROR')"


def test_check_deploy_names_the_default_key() -> None:
    result = _run(SETUP + CHECK, DJANGO_DEBUG="1")
    assert result.returncode != 0 and "smsplatform.E001" in result.stderr


def test_check_deploy_is_clean_of_our_findings_for_an_https_deployment() -> None:
    result = _run(SETUP + CHECK, DJANGO_SECRET_KEY="k-" + "x" * 60, DJANGO_HTTPS="1")
    assert result.returncode == 0, result.stderr
    for finding in ("smsplatform.E001", "smsplatform.W001", "smsplatform.W002", "security.W004", "security.W008"):
        assert finding not in result.stderr, finding
    assert "security.W012" not in result.stderr and "security.W016" not in result.stderr


def test_https_settings_come_from_the_environment() -> None:
    code = SETUP + (
        "print(settings.SECURE_HSTS_SECONDS, settings.SECURE_SSL_REDIRECT, settings.SESSION_COOKIE_SECURE, "
        "settings.SECURE_PROXY_SSL_HEADER)"
    )
    https = _run(code, DJANGO_SECRET_KEY="k" * 50, DJANGO_HTTPS="1", DJANGO_SECURE_PROXY_SSL_HEADER="1")
    assert https.stdout.split() == ["31536000", "True", "True", "('HTTP_X_FORWARDED_PROTO',", "'https')"]
    plain = _run(SETUP + "print(settings.SECURE_HSTS_SECONDS, settings.SECURE_SSL_REDIRECT)", DJANGO_DEBUG="1")
    assert plain.stdout.split() == ["0", "False"]


@pytest.mark.django_db
def test_hsts_is_sent_over_https(client: Client, settings: Any) -> None:
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    response = client.get("/api/v1/health/", secure=True)
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/admin/login/", "/api/v1/health/", "/mcp", "/no-such-page/"])
def test_every_response_carries_the_content_security_policy(client: Client, path: str) -> None:
    policy = client.get(path)["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self';" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-eval" not in policy and "cdn.jsdelivr.net" not in policy


@pytest.mark.django_db
def test_the_api_docs_page_may_load_swagger_ui_from_its_cdn(admin_client: Client) -> None:
    policy = admin_client.get("/api/docs/")["Content-Security-Policy"]
    assert "script-src 'self' https://cdn.jsdelivr.net" in policy


@pytest.mark.django_db
def test_an_empty_policy_turns_the_header_off(client: Client, settings: Any) -> None:
    settings.SMS_CONTENT_SECURITY_POLICY = ""
    assert "Content-Security-Policy" not in client.get("/admin/login/")


@pytest.mark.django_db
def test_the_api_docs_page_has_no_inline_script(admin_client: Client) -> None:
    page = admin_client.get("/api/docs/").content.decode()
    assert "<script>" not in page.replace(" ", "") and "?script" in page
    assert admin_client.get("/api/docs/?script=").status_code == 200
