"""The short-link redirect as a Django view (/s/<code> and /s/<code>/<recipient token> on the
main domain), and the per-process link cache it shares with the short domain's server.

The rules are templates.short_rules (the same ones templates.short_app serves on the short
domain with its own WSGI application and gunicorn, smsplatform.short_server); this view only
turns a Django request into their inputs and their Outcome into a response. This is the
platform's hottest path (every click of every campaign), so in the common case it makes no
database round trip at all: the link comes from a per-process cache and the click goes to the
local click spool (templates.clicks, which also describes what a 302 promises about its
click). Without a database round trip Django's CONN_HEALTH_CHECKS probe (a SELECT 1 before a
request's first query) is not paid either; a cache miss pays it once with its one indexed
SELECT.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any, NamedTuple

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from templates.clicks import flush_clicks
from templates.models import ShortLink
from templates.short_rules import (
    Outcome,
    click_record,
    device_class,
    link_outcome,
    page_html,
    parts_valid,
    request_outcome,
)

__all__ = ["cache_clear", "cached_link", "device_class", "flush_clicks", "lookup_link", "short_link_redirect"]


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


@csrf_exempt
def short_link_redirect(request: HttpRequest, code: str, recipient: str | None = None) -> HttpResponse:
    method = request.method or ""
    # Host: Django's request handling (CommonMiddleware's get_host) has answered a host that is
    # not allowed with 400 before this view runs.
    refusal = request_outcome(method=method, host_ok=True, well_formed=parts_valid(code, recipient))
    if refusal is not None:
        return _response(refusal, None)
    link = _link(code)
    outcome = link_outcome(method=method, link=link, now=timezone.now())
    if outcome.click and link is not None:
        click_record(outcome, link, recipient, request.META.get("HTTP_USER_AGENT", ""))
    return _response(outcome, link)


def _response(outcome: Outcome, link: CachedLink | None) -> HttpResponse:
    response: HttpResponse
    if outcome.redirect and link is not None:
        response = HttpResponseRedirect(link.target_url)  # only ever the stored target
    elif outcome.page is not None:
        response = HttpResponse(page_html(outcome, link), status=outcome.status)
    else:
        response = HttpResponse(status=outcome.status)
    for name, value in outcome.headers:
        response[name] = value
    return response
