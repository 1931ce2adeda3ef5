"""The short domain's own WSGI application: /s/<code> and /s/<code>/<recipient token>, nothing else.

Every click of every campaign comes through here, so this is a small WSGI callable rather than
Django's request handling (no middleware, URL resolver, session, auth, messages or response
classes): it checks the Host header against ALLOWED_HOSTS, parses the path, takes the link from
the same per-process cache as the Django view (templates.short_links.cache: a change saved in this process
is seen at once, any other within SMS_SHORT_LINK_CACHE_SECONDS; expiry is checked on every
request), records the click through templates.short_links.clicks (the spool, or the INSERT path) and
answers the 302 to the stored target. Django is set up (settings, ORM, templates) for the cache
miss, the click writer and the error pages. templates.short_links.wsgi is the production entry and
templates.short_links.server the gunicorn command line that ``make run`` and the benchmark start.

The rules are templates.short_links.rules, which templates.views.short_link_redirect (still
answering /s/ on the main domain) follows too; this module only adapts: WSGI environ in, the
Outcome's status, headers and body out. Its own additions are what Django's request handling
does for the view: the Host check's input, request_started before a query, the headers every
answer carries, and a 500 page for an unexpected error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import lru_cache
from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.core.signals import request_started
from django.utils.encoding import iri_to_uri

from templates.short_links.cache import CachedLink, cached_link, lookup_link
from templates.short_links.rules import (
    PATH_RE,
    REDIRECT_HEADERS,
    Outcome,
    click_record,
    host_allowed,
    link_outcome,
    page_html,
    request_outcome,
)

__all__ = ["application"]

logger = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
Headers = list[tuple[str, str]]


def _middleware_headers() -> tuple[Headers, Headers]:
    """What Django's SecurityMiddleware and XFrameOptionsMiddleware add to the view's answers,
    read once from the settings as those middlewares do: the headers every answer carries, and
    the Referrer-Policy of an answer that sets none itself (the 302 sets its own)."""
    common: Headers = []
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        common.append(("X-Content-Type-Options", "nosniff"))
    common.append(("X-Frame-Options", settings.X_FRAME_OPTIONS.upper()))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        common.append(("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY))
    policy = settings.SECURE_REFERRER_POLICY
    if not policy:
        return common, []
    value = ",".join(v.strip() for v in policy.split(",")) if isinstance(policy, str) else ",".join(policy)
    return common, [("Referrer-Policy", value)]


_COMMON, _REFERRER = _middleware_headers()
_HTML = "text/html; charset=utf-8"
_STATUS = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}
# What Django's own answers to these look like (the view gets them from Django).
_BODY = {400: b"<h1>Bad Request (400)</h1>", 500: b"<h1>Server Error (500)</h1>"}
_SERVER_ERROR = Outcome(500, (("Cache-Control", "no-store"),))


@lru_cache(maxsize=1024)
def _redirect_headers(target_url: str) -> tuple[tuple[str, str], ...]:
    """The 302's headers for one stored target (built once per target, not per click)."""
    location = iri_to_uri(target_url)
    if "\r" in location or "\n" in location:  # validated at creation; never a header injection
        raise ValueError(f"target URL not usable as a Location: {target_url!r}")
    location.encode("latin-1")
    return (
        ("Location", location),
        ("Content-Type", _HTML),
        ("Content-Length", "0"),
        *REDIRECT_HEADERS,
        *_COMMON,
    )


def _host(environ: dict[str, Any]) -> str:
    """The host of a request without a Host header (HTTP/1.0), as Django's get_host builds it."""
    name, port = str(environ.get("SERVER_NAME", "")), str(environ.get("SERVER_PORT", ""))
    scheme = environ.get("wsgi.url_scheme", "http")
    default = "443" if scheme == "https" else "80"
    return name if port in ("", default) else f"{name}:{port}"


def _database_request() -> None:
    """Before a request's first query: Django's request_started (it closes a connection that
    broke or outlived CONN_MAX_AGE and re-arms CONN_HEALTH_CHECKS). Only requests that use the
    database pay for it: a cached link with a spooled click does not."""
    request_started.send(sender=__name__, environ=None)


def _answer(
    environ: dict[str, Any], start_response: StartResponse, outcome: Outcome, link: CachedLink | None
) -> Iterable[bytes]:
    """Any answer but a 302 (application writes those itself)."""
    body = page_html(outcome, link).encode() if outcome.page is not None else _BODY.get(outcome.status, b"")
    headers = [("Content-Type", _HTML), *outcome.headers, ("Content-Length", str(len(body))), *_REFERRER, *_COMMON]
    start_response(_STATUS[outcome.status], headers)
    return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    try:
        method = environ.get("REQUEST_METHOD", "")
        match = PATH_RE.fullmatch(environ.get("PATH_INFO", ""))
        allowed = host_allowed(environ.get("HTTP_HOST") or _host(environ))
        refusal = request_outcome(method, allowed, match is not None)
        if refusal is not None:
            return _answer(environ, start_response, refusal, None)
        assert match is not None  # well formed
        code = match.group(1)
        link = cached_link(code)
        database = link is None
        if link is None:
            _database_request()
            link = lookup_link(code)
        outcome = link_outcome(method, link, datetime.now(UTC))
        if not outcome.redirect or link is None:
            return _answer(environ, start_response, outcome, link)
        if outcome.click:
            if settings.SMS_CLICK_BATCH_SECONDS <= 0 and not database:
                _database_request()  # the INSERT path writes in this request
            click_record(outcome, link, match.group(2), environ.get("HTTP_USER_AGENT", ""))
        start_response("302 Found", list(_redirect_headers(link.target_url)))
        return [b""]
    except Exception:
        logger.exception("Short-link request %s failed", environ.get("PATH_INFO", "")[:200])
        return _answer(environ, start_response, _SERVER_ERROR, None)
