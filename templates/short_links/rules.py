"""The short-link redirect's rules, in one place: what /s/<code>[/<recipient token>] answers.

Two adapters serve them and decide nothing themselves: templates.short_links.app (the short domain's
own WSGI application, the hot path) and templates.views.short_link_redirect (/s/ on the main
domain). Each turns its request into the inputs here, looks the link up its own way (the WSGI
app must run Django's request_started before a query), and turns the Outcome into its response.

The rules: a host that is not allowed gets 400; a malformed path (code or recipient token not
in our alphabet) gets the 404 page; a method other than GET and HEAD gets 405, before any
lookup; an unknown code gets the 404 page and an expired link the 410 page, neither with a
Location; otherwise a 302 to the link's stored target and nothing else (nothing in the request
can change it). Only a GET on a tracked link is a click; the recipient token is recorded only
on a per-recipient link.

The decisions take plain values (no request object) and return shared constant outcomes, so
deciding allocates nothing and imports nothing per request: every click of every campaign
comes through here.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from django.conf import settings
from django.core.signals import setting_changed
from django.db import DatabaseError
from django.dispatch import receiver
from django.http.request import split_domain_port, validate_host
from django.template.loader import render_to_string

from templates.models import DeviceClass
from templates.short_links.clicks import record_click
from templates.short_links.codes import CODE_RE, RECIPIENT_TOKEN_RE

if TYPE_CHECKING:
    from templates.short_links.cache import CachedLink

__all__ = [
    "BAD_HOST",
    "GONE",
    "NOT_ALLOWED",
    "NOT_FOUND",
    "PATH_RE",
    "REDIRECT",
    "REDIRECT_CLICK",
    "REDIRECT_CLICK_RECIPIENT",
    "REDIRECT_HEADERS",
    "Outcome",
    "click_record",
    "device_class",
    "host_allowed",
    "link_outcome",
    "page_html",
    "parts_valid",
    "request_outcome",
]

logger = logging.getLogger(__name__)

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)  # slots: the hot path reads these fields on every click
class Outcome:
    status: int
    # Besides what the adapter adds itself (Location, Content-Type, Content-Length and the
    # headers every answer of the site carries).
    headers: Headers
    page: Literal["not_found", "expired"] | None = None
    redirect: bool = False  # 302 to the link's stored target
    click: bool = False  # record a click
    click_recipient: bool = False  # ... with the request's recipient token


_PAGE: Headers = (("Cache-Control", "no-store"), ("X-Robots-Tag", "noindex"))
# The target never learns the short URL (and so never the recipient token).
REDIRECT_HEADERS: Headers = (
    ("Cache-Control", "no-store, private"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Robots-Tag", "noindex"),
)

BAD_HOST = Outcome(400, ())
NOT_FOUND = Outcome(404, _PAGE, page="not_found")
NOT_ALLOWED = Outcome(405, (("Allow", "GET, HEAD"),))
GONE = Outcome(410, _PAGE, page="expired")
REDIRECT = Outcome(302, REDIRECT_HEADERS, redirect=True)
REDIRECT_CLICK = Outcome(302, REDIRECT_HEADERS, redirect=True, click=True)
REDIRECT_CLICK_RECIPIENT = Outcome(302, REDIRECT_HEADERS, redirect=True, click=True, click_recipient=True)


# --- the request, before the link is looked up ----------------------------------------------


def _bare(pattern: re.Pattern[str]) -> str:
    if not (pattern.pattern.startswith("^") and pattern.pattern.endswith("$")):
        raise ValueError(f"expected an anchored pattern: {pattern.pattern}")
    return pattern.pattern[1:-1]


# A whole path (the WSGI app): the codes and tokens of parts_valid, one optional trailing slash.
# Use fullmatch ("$" would accept a trailing newline). PATH_INFO is already percent-decoded, so
# an encoded slash, newline or NUL cannot slip into a code or token.
PATH_RE = re.compile(rf"/s/({_bare(CODE_RE)})(?:/({_bare(RECIPIENT_TOKEN_RE)}))?/?")


def parts_valid(code: str, recipient: str | None) -> bool:
    """The same rule as PATH_RE for a path already split (the view's URL arguments)."""
    return CODE_RE.fullmatch(code) is not None and (
        recipient is None or RECIPIENT_TOKEN_RE.fullmatch(recipient) is not None
    )


# The configured short domain, as this process last read it: (domain, monotonic time to read again).
_short_domain: tuple[str, float] = ("", 0.0)


def short_domain() -> str:
    """The configured short domain (config short_links.domain), read again at most every
    SMS_SHORT_LINK_CACHE_SECONDS: a click does not pay for a configuration read. If the read fails
    the last known domain is kept (the Host check must not turn a database blip into 400s)."""
    global _short_domain
    domain, until = _short_domain
    now = time.monotonic()
    if now >= until:
        from smsplatform.config_service import platform_config_data

        try:
            domain = str(platform_config_data()["short_links"]["domain"])
        except Exception:  # any failure to read: keep serving the last known domain
            logger.warning("could not read the short domain; keeping %r", domain, exc_info=True)
        _short_domain = (domain, now + settings.SMS_SHORT_LINK_CACHE_SECONDS)
    return domain


def short_domain_forget() -> None:
    """Read the short domain again on the next request (a configuration change, tests)."""
    global _short_domain
    _short_domain = ("", 0.0)


def host_allowed(host: str) -> bool:
    """Django's Host check (HttpRequest.get_host), without X-Forwarded-Host (not trusted here),
    for the WSGI app, against ALLOWED_HOSTS and the configured short domain: the server of the
    short domain serves its own host even when ALLOWED_HOSTS names only the main site's. The
    embedded default's ALLOWED_HOSTS (localhost, 127.0.0.1) keeps localhost:port working."""
    return _host_allowed(host, short_domain())


@lru_cache(maxsize=256)
def _host_allowed(host: str, domain: str) -> bool:
    name, _ = split_domain_port(host)
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    if domain:
        allowed.append(domain)
    return bool(name) and validate_host(name, allowed)


@receiver(setting_changed, dispatch_uid="templates.short_links.rules.setting_changed")
def _setting_changed(setting: str, **kwargs: Any) -> None:
    if setting in ("ALLOWED_HOSTS", "DEBUG"):
        _host_allowed.cache_clear()
    if setting == "SMS_SHORT_LINK_CACHE_SECONDS":
        short_domain_forget()


# request_outcome, link_outcome and click_record take their arguments by position too: the WSGI
# app calls them so on every click (keyword arguments cost some 40 ns a call on CPython 3.11).


def request_outcome(method: str, host_ok: bool, well_formed: bool) -> Outcome | None:
    """The answer that needs no link, or None: look the link up and ask link_outcome.
    host_ok: host_allowed() for the WSGI app; the view's host Django has checked already."""
    if not host_ok:
        return BAD_HOST
    if not well_formed:
        return NOT_FOUND
    # Refused before the lookup: no other method ever costs a query.
    if method != "GET" and method != "HEAD":
        return NOT_ALLOWED
    return None


# --- the link -----------------------------------------------------------------------------------


def link_outcome(method: str, link: CachedLink | None, now: datetime) -> Outcome:
    """The answer for a request request_outcome let through, given the lookup's result."""
    if link is None:
        return NOT_FOUND
    # Checked on every request: a cached link keeps its expires_at, not a verdict.
    if now >= link.expires_at:
        return GONE
    # HEAD is what link scanners send; only a GET is a click.
    if not link.tracking or method != "GET":
        return REDIRECT
    return REDIRECT_CLICK_RECIPIENT if link.per_recipient else REDIRECT_CLICK


_BOT_RE = re.compile(
    r"bot|crawl|spider|slurp|preview|scan|fetch|monitor|facebookexternalhit|whatsapp|telegram|skype|"
    r"curl|wget|python|httpx|go-http|java/|okhttp|headless|phantom|lighthouse|validator",
    re.IGNORECASE,
)
_TABLET_RE = re.compile(r"ipad|tablet|kindle|silk|playbook|nexus (7|9|10)|sm-t\d", re.IGNORECASE)
_MOBILE_RE = re.compile(
    r"mobi|iphone|ipod|android|windows phone|blackberry|bb10|opera mini|iemobile|harmonyos", re.IGNORECASE
)


@lru_cache(maxsize=2048)
def device_class(user_agent: str) -> str:
    """mobile / tablet / desktop / bot from the User-Agent (no UA at all counts as a bot)."""
    if not user_agent or _BOT_RE.search(user_agent):
        return DeviceClass.BOT
    if _TABLET_RE.search(user_agent) or ("android" in user_agent.lower() and "mobile" not in user_agent.lower()):
        return DeviceClass.TABLET
    if _MOBILE_RE.search(user_agent):
        return DeviceClass.MOBILE
    return DeviceClass.DESKTOP


def click_record(outcome: Outcome, link: CachedLink, recipient: str | None, user_agent: str) -> None:
    """Record the click of an outcome with ``click`` set (templates.short_links.clicks says where it goes)."""
    try:
        record_click(
            link.pk,
            device=device_class(user_agent[:512]),
            recipient=recipient if outcome.click_recipient else None,
        )
    except DatabaseError:
        # The recipient still gets where the link points; a lost click is logged, not shown.
        logger.exception("Recording a click on link %s failed", link.pk)


def page_html(outcome: Outcome, link: CachedLink | None) -> str:
    """The 404 or 410 page of an outcome with ``page`` set (it needs no request)."""
    expired = outcome.page == "expired"
    return render_to_string(
        "sms_templates/link_unavailable.html",
        {"expired": expired, "expired_at": link.expires_at if expired and link is not None else None},
    )
