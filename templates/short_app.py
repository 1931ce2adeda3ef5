"""The short domain's own WSGI application: /s/<code> and /s/<code>/<recipient token>, nothing else.

Every click of every campaign comes through here, so this is a small WSGI callable rather than
Django's request handling (no middleware, URL resolver, session, auth, messages or response
classes): it checks the Host header against ALLOWED_HOSTS, parses the path, takes the link from
the same per-process cache as the Django view (templates.views: a change saved in this process
is seen at once, any other within SMS_SHORT_LINK_CACHE_SECONDS; expiry is checked on every
request), records the click through templates.clicks (the spool, or the INSERT path) and
answers the 302 to the stored target. Django is set up (settings, ORM, templates) for the cache
miss, the click writer and the error pages. smsplatform.short_wsgi is the production entry and
smsplatform.short_server the gunicorn command line that ``make run`` and the benchmark start.

The rules are those of templates.views.short_link_redirect, which still answers /s/ on the main
domain: only ever the stored target (nothing in the request can change it); GET records a
click, HEAD redirects without one, other methods get 405; a malformed path or unknown code gets
the 404 page, an expired link the 410 page, neither with a Location; a host that is not allowed
gets 400.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.signals import request_started, setting_changed
from django.db import DatabaseError
from django.dispatch import receiver
from django.http.request import split_domain_port, validate_host
from django.template.loader import render_to_string
from django.utils.encoding import iri_to_uri

from templates.clicks import record_click
from templates.selectors import CODE_RE, RECIPIENT_TOKEN_RE
from templates.views import CachedLink, cached_link, device_class, lookup_link

__all__ = ["application"]

logger = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
Headers = list[tuple[str, str]]


def _bare(pattern: re.Pattern[str]) -> str:
    if not (pattern.pattern.startswith("^") and pattern.pattern.endswith("$")):
        raise ValueError(f"expected an anchored pattern: {pattern.pattern}")
    return pattern.pattern[1:-1]


# The same codes and tokens as the view; one optional trailing slash. PATH_INFO is already
# percent-decoded, so an encoded slash, newline or NUL cannot slip into a code or token.
_PATH_RE = re.compile(rf"/s/({_bare(CODE_RE)})(?:/({_bare(RECIPIENT_TOKEN_RE)}))?/?")

# Headers every answer carries (what Django's SecurityMiddleware and XFrameOptionsMiddleware add).
_COMMON: Headers = [("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY")]
_HTML = "text/html; charset=utf-8"


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
        ("Cache-Control", "no-store, private"),
        # The target never learns the short URL (and so never the recipient token).
        ("Referrer-Policy", "no-referrer"),
        ("X-Robots-Tag", "noindex"),
        *_COMMON,
    )


@lru_cache(maxsize=256)
def _host_allowed(host: str) -> bool:
    """Django's Host check (HttpRequest.get_host), without X-Forwarded-Host (not trusted here)."""
    domain, _ = split_domain_port(host)
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return bool(domain) and validate_host(domain, allowed)


@receiver(setting_changed, dispatch_uid="templates.short_app.setting_changed")
def _setting_changed(setting: str, **kwargs: Any) -> None:
    if setting in ("ALLOWED_HOSTS", "DEBUG"):
        _host_allowed.cache_clear()


def _host(environ: dict[str, Any]) -> str:
    host = environ.get("HTTP_HOST")
    if host:
        return str(host)
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
    environ: dict[str, Any], start_response: StartResponse, status: str, headers: Headers, body: bytes
) -> Iterable[bytes]:
    start_response(status, [*headers, ("Content-Length", str(len(body))), *_COMMON])
    return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


def _page(
    environ: dict[str, Any], start_response: StartResponse, *, expired: bool, link: CachedLink | None = None
) -> Iterable[bytes]:
    body = render_to_string(
        "sms_templates/link_unavailable.html", {"expired": expired, "expired_at": link.expires_at if link else None}
    ).encode()
    status = "410 Gone" if expired else "404 Not Found"
    headers = [("Content-Type", _HTML), ("Cache-Control", "no-store"), ("X-Robots-Tag", "noindex")]
    return _answer(environ, start_response, status, headers, body)


def _redirect(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    if not _host_allowed(_host(environ)):
        return _answer(
            environ, start_response, "400 Bad Request", [("Content-Type", _HTML)], b"<h1>Bad Request (400)</h1>"
        )
    match = _PATH_RE.fullmatch(environ.get("PATH_INFO", ""))
    if match is None:
        return _page(environ, start_response, expired=False)
    method = environ.get("REQUEST_METHOD")
    if method != "GET" and method != "HEAD":
        return _answer(environ, start_response, "405 Method Not Allowed", [("Allow", "GET, HEAD")], b"")
    code = match.group(1)
    link = cached_link(code)
    database = link is None
    if link is None:
        _database_request()
        link = lookup_link(code)
        if link is None:
            return _page(environ, start_response, expired=False)
    if datetime.now(UTC) >= link.expires_at:
        return _page(environ, start_response, expired=True, link=link)
    # HEAD is what link scanners send; only a GET is a click.
    if link.tracking and method == "GET":
        if settings.SMS_CLICK_BATCH_SECONDS <= 0 and not database:
            _database_request()  # the INSERT path writes in this request
        try:
            record_click(
                link.pk,
                device=device_class(environ.get("HTTP_USER_AGENT", "")[:512]),
                recipient=match.group(2) if link.per_recipient else None,
            )
        except DatabaseError:
            # The recipient still gets where the link points; a lost click is logged, not shown.
            logger.exception("Recording a click on link %s failed", link.pk)
    start_response("302 Found", list(_redirect_headers(link.target_url)))
    return [b""]


def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    try:
        return _redirect(environ, start_response)
    except Exception:
        logger.exception("Short-link request %s failed", environ.get("PATH_INFO", "")[:200])
        headers = [("Content-Type", _HTML), ("Cache-Control", "no-store")]
        return _answer(environ, start_response, "500 Internal Server Error", headers, b"<h1>Server Error (500)</h1>")
