"""The short-link redirect as a Django view: /s/<code> and /s/<code>/<recipient token>.

The short domain itself is served by templates.short_app (its own WSGI application and gunicorn,
smsplatform.short_server), which uses this module's link cache and device classes; this view
answers /s/ on the main domain with the same rules.

It answers 302 to the link's stored target and nothing else: the target was validated
when the link was created, and nothing in the request (query string, path suffix,
headers) can change where it points. This is the platform's hottest path (every click of
every campaign), so in the common case it makes no database round trip at all: the link
comes from a per-process cache and the click goes to the local click spool (templates.clicks,
which also describes what a 302 promises about its click). Without a database round trip
Django's CONN_HEALTH_CHECKS probe (a SELECT 1 before a request's first query) is not paid
either; a cache miss pays it once with its one indexed SELECT.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from templates.clicks import flush_clicks, record_click
from templates.models import DeviceClass, ShortLink
from templates.selectors import CODE_RE, RECIPIENT_TOKEN_RE

__all__ = ["cache_clear", "cached_link", "device_class", "flush_clicks", "lookup_link", "short_link_redirect"]

logger = logging.getLogger(__name__)


class CachedLink(NamedTuple):
    pk: int
    target_url: str
    expires_at: datetime
    tracking: bool
    per_recipient: bool


# Links are not edited after creation (services create them, the admin is read-only), but a
# link can still be changed or removed (an operator expiring it early): a save or delete in
# this process drops its entry at once (and again at commit), and every other process reads
# it again within SMS_SHORT_LINK_CACHE_SECONDS. Expiry is checked on every request against
# the cached expires_at. Misses are not cached.
_CACHE_MAX = 10_000
_cache: dict[str, tuple[float, CachedLink]] = {}
_cache_lock = threading.Lock()


def cached_link(code: str) -> CachedLink | None:
    """The link from this process's cache if its entry is still fresh (no database access)."""
    hit = _cache.get(code)
    if hit is not None and hit[0] > time.monotonic():
        return hit[1]
    return None


def _link(code: str) -> CachedLink | None:
    link = cached_link(code)
    if link is not None:
        return link
    now = time.monotonic()
    row = (
        ShortLink.objects.filter(code=code)
        .values_list("pk", "target_url", "expires_at", "tracking", "per_recipient")
        .first()
    )
    if row is None:
        return None
    link = CachedLink(*row)
    with _cache_lock:
        if len(_cache) >= _CACHE_MAX:
            _cache.clear()
        _cache[code] = (now + settings.SMS_SHORT_LINK_CACHE_SECONDS, link)
    return link


def lookup_link(code: str) -> CachedLink | None:
    """The link with this code: from the cache, or read (and cached) on a miss; None if unknown."""
    return _link(code)


def cache_forget(code: str) -> None:
    with _cache_lock:
        _cache.pop(code, None)


@receiver(post_save, sender=ShortLink, dispatch_uid="templates.views.short_link_saved")
@receiver(post_delete, sender=ShortLink, dispatch_uid="templates.views.short_link_deleted")
def _short_link_changed(sender: type[ShortLink], instance: ShortLink, **kwargs: Any) -> None:
    cache_forget(instance.code)
    # A request in between could cache the old row again until the change commits.
    transaction.on_commit(lambda: cache_forget(instance.code), using=kwargs.get("using"))


def cache_clear() -> None:
    with _cache_lock:
        _cache.clear()


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


def _page(request: HttpRequest, *, status: int, expired: bool, link: CachedLink | None = None) -> HttpResponse:
    response = render(
        request,
        "sms_templates/link_unavailable.html",
        {"expired": expired, "expired_at": link.expires_at if link else None},
        status=status,
    )
    response["Cache-Control"] = "no-store"
    response["X-Robots-Tag"] = "noindex"
    return response


@csrf_exempt
def short_link_redirect(request: HttpRequest, code: str, recipient: str | None = None) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    # fullmatch: "$" alone would accept a trailing newline (/s/<code>%0A).
    if not CODE_RE.fullmatch(code) or (recipient is not None and not RECIPIENT_TOKEN_RE.fullmatch(recipient)):
        return _page(request, status=404, expired=False)
    link = _link(code)
    if link is None:
        return _page(request, status=404, expired=False)
    if timezone.now() >= link.expires_at:
        return _page(request, status=410, expired=True, link=link)
    # HEAD is what link scanners send; only a GET is a click.
    if link.tracking and request.method == "GET":
        try:
            record_click(
                link.pk,
                device=device_class(request.META.get("HTTP_USER_AGENT", "")[:512]),
                recipient=recipient if link.per_recipient else None,
            )
        except DatabaseError:
            # The recipient still gets where the link points; a lost click is logged, not shown.
            logger.exception("Recording a click on link %s failed", link.pk)
    response = HttpResponseRedirect(link.target_url)
    response["Cache-Control"] = "no-store, private"
    # The target never learns the short URL (and so never the recipient token).
    response["Referrer-Policy"] = "no-referrer"
    response["X-Robots-Tag"] = "noindex"
    return response
