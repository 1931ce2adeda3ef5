"""templates.short_links.rules: the redirect's rules as plain decisions, and both adapters following them.

The decision tests need no database. The parity tests send the same requests to the Django view
(through the test Client and the whole middleware stack) and to the short domain's WSGI
application, and expect the same answer and the same clicks from both.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.signals import request_started
from django.db import close_old_connections
from django.test import Client
from django.utils import timezone

from templates.models import LinkClick, ShortLink
from templates.short_links import rules as short_rules
from templates.short_links.cache import CachedLink
from templates.short_links.rules import (
    BAD_HOST,
    GONE,
    NOT_ALLOWED,
    NOT_FOUND,
    PATH_RE,
    REDIRECT,
    REDIRECT_CLICK,
    REDIRECT_CLICK_RECIPIENT,
    link_outcome,
    parts_valid,
    request_outcome,
)
from tests.support.short_app import call
from tests.support.templates import IPHONE, make_link

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def cached(*, tracking: bool = True, per_recipient: bool = False, expires_in: timedelta = timedelta(days=1)) -> Any:
    return CachedLink(7, "https://shop.example.hk/spring", NOW + expires_in, tracking, per_recipient)


@pytest.mark.parametrize(
    ("method", "host_ok", "well_formed", "expected"),
    [
        ("GET", True, True, None),
        ("HEAD", True, True, None),
        ("GET", False, True, BAD_HOST),  # the host first, whatever else is wrong
        ("POST", False, False, BAD_HOST),
        ("GET", True, False, NOT_FOUND),
        ("POST", True, False, NOT_FOUND),  # not a short link at all: 404, not 405
        ("POST", True, True, NOT_ALLOWED),
        ("PUT", True, True, NOT_ALLOWED),
        ("OPTIONS", True, True, NOT_ALLOWED),
        ("get", True, True, NOT_ALLOWED),
        ("", True, True, NOT_ALLOWED),
    ],
)
def test_request_outcome(method: str, host_ok: bool, well_formed: bool, expected: Any) -> None:
    assert request_outcome(method=method, host_ok=host_ok, well_formed=well_formed) is expected


@pytest.mark.parametrize(
    ("method", "link", "expected"),
    [
        ("GET", None, NOT_FOUND),
        ("HEAD", None, NOT_FOUND),
        ("GET", cached(expires_in=timedelta(0)), GONE),  # expires_at itself is past
        ("HEAD", cached(expires_in=-timedelta(seconds=1)), GONE),
        ("GET", cached(), REDIRECT_CLICK),
        ("GET", cached(per_recipient=True), REDIRECT_CLICK_RECIPIENT),
        ("HEAD", cached(), REDIRECT),  # a link scanner: no click
        ("HEAD", cached(per_recipient=True), REDIRECT),
        ("GET", cached(tracking=False), REDIRECT),
        ("GET", cached(tracking=False, per_recipient=True), REDIRECT),
    ],
)
def test_link_outcome(method: str, link: Any, expected: Any) -> None:
    assert link_outcome(method=method, link=link, now=NOW) is expected


def test_the_outcomes_say_everything_an_adapter_needs() -> None:
    for redirect in (REDIRECT, REDIRECT_CLICK, REDIRECT_CLICK_RECIPIENT):
        assert redirect.status == 302 and redirect.redirect and redirect.page is None
        assert dict(redirect.headers) == {
            "Cache-Control": "no-store, private",
            "Referrer-Policy": "no-referrer",
            "X-Robots-Tag": "noindex",
        }
    assert not REDIRECT.click and REDIRECT_CLICK.click and not REDIRECT_CLICK.click_recipient
    assert REDIRECT_CLICK_RECIPIENT.click and REDIRECT_CLICK_RECIPIENT.click_recipient
    for refusal in (BAD_HOST, NOT_FOUND, NOT_ALLOWED, GONE):
        assert not refusal.redirect and not refusal.click and "Location" not in dict(refusal.headers)
    assert (NOT_FOUND.status, NOT_FOUND.page, GONE.status, GONE.page) == (404, "not_found", 410, "expired")
    assert dict(NOT_FOUND.headers) == dict(GONE.headers) == {"Cache-Control": "no-store", "X-Robots-Tag": "noindex"}
    assert dict(NOT_ALLOWED.headers) == {"Allow": "GET, HEAD"} and BAD_HOST.status == 400


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        ("/s/Ab3dEf7h", ("Ab3dEf7h", None)),
        ("/s/Ab3dEf7h/", ("Ab3dEf7h", None)),
        ("/s/Ab3dEf7h/rcpt_0-1", ("Ab3dEf7h", "rcpt_0-1")),
        ("/s/Ab3dEf7h/rcpt0001/", ("Ab3dEf7h", "rcpt0001")),
        ("/s/Ab3dEf7", ("Ab3dEf7", None)),
        ("/s/Ab3dEf", ("Ab3dEf", None)),  # too short
        ("/s/" + "A" * 17, ("A" * 17, None)),  # too long
        ("/s/Ab3dEf7h\n", ("Ab3dEf7h\n", None)),
        ("/s/Ab3dEf7h/rcpt0001\n", ("Ab3dEf7h", "rcpt0001\n")),
        ("/s/Ab3dEf7h/bad!token", ("Ab3dEf7h", "bad!token")),
        ("/s/Ab3dEf7h/abc", ("Ab3dEf7h", "abc")),
        ("/s/Ab3d-f7h", ("Ab3d-f7h", None)),  # "-" is for tokens only
        ("/s/évil.exa", ("évil.exa", None)),
    ],
)
def test_a_whole_path_and_its_parts_follow_one_rule(path: str, parts: tuple[str, str | None]) -> None:
    """PATH_RE (the WSGI app's raw path) and parts_valid (the view's URL arguments) agree."""
    match = PATH_RE.fullmatch(path)
    assert (match is not None) == parts_valid(*parts), path
    if match is not None:
        assert match.groups() == parts


def test_host_allowed_follows_the_setting(settings: Any) -> None:
    assert short_rules.host_allowed("127.0.0.1:8001") and not short_rules.host_allowed("evil.example")
    assert not short_rules.host_allowed("")
    settings.ALLOWED_HOSTS = ["s.example.hk"]
    assert short_rules.host_allowed("s.example.hk:443") and not short_rules.host_allowed("127.0.0.1")


# --- the two adapters, request for request ------------------------------------------------------


def view(path: str, method: str) -> Any:
    return Client(HTTP_USER_AGENT=IPHONE).generic(method, path)


def wsgi(path: str, method: str) -> Any:
    """What the test Client does around a request: request_started must not close the connection
    that holds the test's transaction (the Client reconnects that handler after each request)."""
    request_started.disconnect(close_old_connections)
    try:
        return call(path, method=method)
    finally:
        request_started.connect(close_old_connections)


CASES = [  # (path, method, clicks recorded); every path is one the view's URL pattern routes
    ("/s/{SHARED}", "GET", 1),
    ("/s/{SHARED}/", "GET", 1),
    ("/s/{SHARED}?next=http://evil.example/", "GET", 1),
    ("/s/{SHARED}/someone", "GET", 1),
    ("/s/{SHARED}", "HEAD", 0),
    ("/s/{SHARED}", "POST", 0),
    ("/s/{SHARED}", "DELETE", 0),
    ("/s/{VIP}/rcpt0001", "GET", 1),
    ("/s/{VIP}/rcpt0001", "GET", 1),  # a repeat
    ("/s/{VIP}/rcpt0002/", "HEAD", 0),
    ("/s/{VIP}/bad!token", "GET", 0),
    ("/s/{VIP}/rcpt0001%0A", "GET", 0),
    ("/s/{VIP}%0A", "GET", 0),
    ("/s/{VIP}/rcpt0001", "POST", 0),
    ("/s/bad!code", "POST", 0),  # malformed: 404 before 405
    ("/s/Zz9Zz9Zz", "GET", 0),
    ("/s/Zz9Zz9Zz", "HEAD", 0),
    ("/s/Zz9Zz9Zz", "POST", 0),
    ("/s/{UNTRACKED}", "GET", 0),
    ("/s/{EXPIRED}", "GET", 0),
    ("/s/{EXPIRED}", "HEAD", 0),
]
COMPARED = (
    *("Location", "Cache-Control", "Referrer-Policy", "X-Robots-Tag", "Allow"),
    *("X-Content-Type-Options", "X-Frame-Options", "Cross-Origin-Opener-Policy"),
)


@pytest.fixture
def codes(marketing: Any) -> dict[str, dict[str, Any]]:
    links = {
        "SHARED": make_link(marketing),
        "VIP": make_link(marketing, "https://shop.example.hk/vip", per_recipient=True),
        "UNTRACKED": make_link(marketing, "https://shop.example.hk/plain", tracking=False),
        "EXPIRED": make_link(marketing, "https://shop.example.hk/old"),
    }
    ShortLink.objects.filter(pk=links["EXPIRED"]["short_link_id"]).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )
    return links


@pytest.mark.django_db
def test_the_view_and_the_wsgi_app_answer_alike(codes: dict[str, dict[str, Any]]) -> None:
    targets = {link["code"]: link["target_url"] for link in codes.values()}
    for template, method, clicks in CASES:
        path = template.format(**{name: link["code"] for name, link in codes.items()})
        answers = []
        for adapter in (view, wsgi):
            before = LinkClick.objects.count()
            answer = adapter(path, method)
            assert LinkClick.objects.count() - before == clicks, (template, method, adapter)
            headers = {name: answer.get(name, "") for name in COMPARED}
            answers.append((answer.status_code, headers, answer.content.decode()))
        (status, headers, body), (wsgi_status, wsgi_headers, wsgi_body) = answers
        assert (status, headers) == (wsgi_status, wsgi_headers), (template, method)
        if status in (404, 410) and method == "GET":
            assert body == wsgi_body, (template, method)  # the same page
        if status == 302:
            assert headers["Location"] == targets[path.split("/")[2].partition("?")[0]]
    vip = codes["VIP"]["short_link_id"]
    assert list(LinkClick.objects.filter(link_id=vip).order_by("id").values_list("recipient_token", "is_unique")) == [
        ("rcpt0001", True),
        ("rcpt0001", False),
        ("rcpt0001", False),
        ("rcpt0001", False),
    ]
