"""The per-process short-link cache both redirect adapters read (templates.views on the main
domain, templates.short_links.app on the short domain): in the common case a redirect makes no
database round trip at all for its link."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any, NamedTuple

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from templates.models import ShortLink

__all__ = ["CachedLink", "cache_clear", "cache_forget", "cached_link", "lookup_link"]


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


def lookup_link(code: str) -> CachedLink | None:
    """The link with this code: from the cache, or read (and cached) on a miss; None if unknown."""
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


def cache_forget(code: str) -> None:
    with _cache_lock:
        _cache.pop(code, None)


@receiver(post_save, sender=ShortLink, dispatch_uid="templates.short_links.cache.short_link_saved")
@receiver(post_delete, sender=ShortLink, dispatch_uid="templates.short_links.cache.short_link_deleted")
def _short_link_changed(sender: type[ShortLink], instance: ShortLink, **kwargs: Any) -> None:
    cache_forget(instance.code)
    # A request in between could cache the old row again until the change commits.
    transaction.on_commit(lambda: cache_forget(instance.code), using=kwargs.get("using"))


def cache_clear() -> None:
    with _cache_lock:
        _cache.clear()
