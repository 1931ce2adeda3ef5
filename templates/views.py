"""The short-link redirect on the short domain: /s/<code> and /s/<code>/<recipient token>.

It answers 302 to the link's stored target and nothing else: the target was validated
when the link was created, and nothing in the request (query string, path suffix,
headers) can change where it points. This is the platform's hottest path (every
click of every campaign), so it avoids the ORM: one indexed SELECT (cached briefly per
process, links are immutable) and one INSERT per click, or, with SMS_CLICK_BATCH_SECONDS
set, no database round trip at all (clicks are written in batches by a per-worker thread).
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import threading
import time
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from templates.models import DeviceClass, LinkClick, ShortLink
from templates.selectors import CODE_RE, RECIPIENT_TOKEN_RE

logger = logging.getLogger(__name__)


class CachedLink(NamedTuple):
    pk: int
    target_url: str
    expires_at: datetime
    tracking: bool
    per_recipient: bool


# Links never change after creation, so a short per-process cache is safe; expiry is still
# checked on every request against the cached expires_at. Misses are not cached.
_CACHE_SECONDS = 60.0
_CACHE_MAX = 10_000
_cache: dict[str, tuple[float, CachedLink]] = {}
_cache_lock = threading.Lock()


def _link(code: str) -> CachedLink | None:
    now = time.monotonic()
    hit = _cache.get(code)
    if hit is not None and hit[0] > now:
        return hit[1]
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
        _cache[code] = (now + _CACHE_SECONDS, link)
    return link


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


_TABLE = LinkClick._meta.db_table
_INSERT = (
    f"INSERT INTO {_TABLE} (link_id, clicked_at, device_class, recipient_token, is_unique) "  # noqa: S608 - names are ours
    "VALUES (%s, %s, %s, %s, %s)"
)
# One statement: the click is unique when this recipient has no unique click on the link yet.
# The NOT EXISTS probe uses the partial unique index, which also settles a race between two
# first clicks (the loser gets IntegrityError and is recorded as a repeat).
_INSERT_FIRST = (
    f"INSERT INTO {_TABLE} (link_id, clicked_at, device_class, recipient_token, is_unique) "  # noqa: S608
    f"SELECT %s, %s, %s, %s, NOT EXISTS (SELECT 1 FROM {_TABLE} "
    "WHERE link_id = %s AND recipient_token = %s AND is_unique)"
)


# On PostgreSQL the click commits asynchronously (synchronous_commit off for this one implicit
# transaction, sent in the same round trip): the redirect does not wait for the WAL flush. A
# database crash can lose the last fraction of a second of clicks, never corrupt them; every
# other write keeps full durability.
_ASYNC_COMMIT = "SET LOCAL synchronous_commit TO OFF; "

# (link id, time, device class, recipient token, may be the recipient's unique click)
Click = tuple[int, datetime, str, str | None, bool]


def _prefix() -> str:
    return _ASYNC_COMMIT if connection.vendor == "postgresql" else ""


def _at(when: datetime) -> Any:
    return connection.ops.adapt_datetimefield_value(when)


def _insert_one(click: Click) -> None:
    link_id, when, device, recipient, candidate = click
    with connection.cursor() as cursor:
        if not candidate:
            cursor.execute(_prefix() + _INSERT, [link_id, _at(when), device, recipient, False])
            return
        try:
            cursor.execute(_prefix() + _INSERT_FIRST, [link_id, _at(when), device, recipient, link_id, recipient])
        except IntegrityError:
            cursor.execute(_prefix() + _INSERT, [link_id, _at(when), device, recipient, False])


def _insert_batch(clicks: list[Click]) -> None:
    """One INSERT for many clicks, with the same unique rule as _INSERT_FIRST."""
    seen: set[tuple[int, str | None]] = set()
    params: list[Any] = []
    for link_id, when, device, recipient, candidate in clicks:
        # Within one batch only a recipient's first click may be its unique one.
        first = candidate and (link_id, recipient) not in seen
        seen.add((link_id, recipient))
        params += [link_id, _at(when), device, recipient, first]
    values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(clicks))
    # Only placeholders and our own table name are interpolated.
    sql = (
        f"WITH v (link_id, clicked_at, device_class, recipient_token, candidate) AS (VALUES {values}) "  # noqa: S608
        f"INSERT INTO {_TABLE} (link_id, clicked_at, device_class, recipient_token, is_unique) "
        "SELECT v.link_id, v.clicked_at, v.device_class, v.recipient_token, v.candidate AND NOT EXISTS "
        f"(SELECT 1 FROM {_TABLE} c WHERE c.link_id = v.link_id AND c.recipient_token = v.recipient_token "
        "AND c.is_unique) FROM v"
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute(_prefix() + sql, params)
    except IntegrityError:
        # Another process recorded one of these first clicks at the same moment: settle row by row.
        for click in clicks:
            _insert_one(click)


class ClickBatcher:
    """Optional (SMS_CLICK_BATCH_SECONDS > 0): clicks are queued per process and written by a
    background thread with one INSERT per batch, so a redirect makes no database round trip.
    The trade-off: clicks reach the table up to that interval later, and a worker killed hard
    (SIGKILL, OOM) loses the clicks still queued; a normal stop flushes them (atexit)."""

    MAX_BATCH = 1000
    MAX_QUEUED = 100_000

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.queue: list[Click] = []
        self.lock = threading.Lock()
        self.wakeup = threading.Event()
        self.pid: int | None = None

    def add(self, click: Click) -> None:
        with self.lock:
            if self.pid != os.getpid():  # first click in this (forked) worker: start its writer
                self.pid = os.getpid()
                self.queue = []
                threading.Thread(target=self._run, name="click-writer", daemon=True).start()
                atexit.register(self.flush)
            if len(self.queue) >= self.MAX_QUEUED:
                logger.error("Click queue full (database unreachable?): dropping a click on link %s", click[0])
                return
            self.queue.append(click)
            if len(self.queue) >= self.MAX_BATCH:
                self.wakeup.set()

    def _run(self) -> None:
        while True:
            self.wakeup.wait(self.interval)
            self.wakeup.clear()
            self.flush()

    def flush(self) -> None:
        with self.lock:
            batch, self.queue = self.queue[: self.MAX_BATCH], self.queue[self.MAX_BATCH :]
        if not batch:
            return
        try:
            _insert_batch(batch)
        except DatabaseError:
            logger.exception("Writing %d clicks failed; they are retried", len(batch))
            connection.close()  # reconnect on the next attempt
            with self.lock:
                self.queue[:0] = batch
            time.sleep(min(self.interval * 10, 1.0))
        if len(self.queue) >= self.MAX_BATCH:
            self.wakeup.set()


_batcher: ClickBatcher | None = None


def record_click(link: CachedLink, *, device: str, recipient: str | None) -> None:
    global _batcher
    # Link scanners and previews are recorded, but never take a recipient's unique click.
    click: Click = (link.pk, timezone.now(), device, recipient, recipient is not None and device != DeviceClass.BOT)
    interval = float(getattr(settings, "SMS_CLICK_BATCH_SECONDS", 0) or 0)
    if interval <= 0:
        _insert_one(click)
        return
    if _batcher is None:
        _batcher = ClickBatcher(interval)
    _batcher.add(click)


def flush_clicks() -> None:
    """Write queued clicks now (batch mode only; a no-op otherwise)."""
    if _batcher is not None:
        _batcher.flush()


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
                link,
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
