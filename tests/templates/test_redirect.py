"""The /s/<code> redirect: only ever the stored target, clicks recorded, expired links explained."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from templates.models import DeviceClass, LinkClick, ShortLink
from templates.short_links.clicks import Click
from templates.short_links.rules import device_class
from tests.support.db import postgres_only
from tests.support.templates import IPHONE, make_link

pytestmark = pytest.mark.django_db


@pytest.fixture
def link(marketing: Any) -> dict[str, Any]:
    return make_link(marketing)


@pytest.fixture
def per_recipient(marketing: Any) -> dict[str, Any]:
    return make_link(marketing, "https://shop.example.hk/vip", per_recipient=True)


def get(path: str, ua: str = IPHONE, **extra: Any) -> Any:
    return Client(HTTP_USER_AGENT=ua).get(path, **extra)


def test_redirects_to_the_stored_target_and_records_the_click(link: dict[str, Any]) -> None:
    response = get(f"/s/{link['code']}")
    assert response.status_code == 302
    assert response["Location"] == link["target_url"]
    assert response["Cache-Control"] == "no-store, private" and response["Referrer-Policy"] == "no-referrer"
    click = LinkClick.objects.get()
    assert click.link_id == link["short_link_id"] and click.device_class == DeviceClass.MOBILE
    assert click.recipient_token is None and click.is_unique is False
    assert timezone.now() - click.clicked_at < timedelta(seconds=5)


@pytest.mark.parametrize(
    "suffix",
    [
        "?next=http://evil.example/",
        "?url=https%3A%2F%2Fevil.example",
        "?redirect=//evil.example",
        "?next=javascript:alert(1)",
        "/",
        "#http://evil.example",
        "?%0d%0aLocation:%20http://evil.example",
    ],
)
def test_nothing_in_the_request_changes_the_target(link: dict[str, Any], suffix: str) -> None:
    response = get(f"/s/{link['code']}{suffix}")
    assert response.status_code == 302 and response["Location"] == link["target_url"]


@pytest.mark.parametrize(
    "path",
    [
        "/s//evil.example",
        "/s///evil.example",
        "/s/%2F%2Fevil.example",
        "/s/http://evil.example",
        "/s/https:%2F%2Fevil.example",
        "/s/%68ttp:%2f%2fevil.example",
        "/s/..%2F..%2Fadmin",
        "/s/CODE/..",
        "/s/CODE/http://evil.example",
        "/s/CODE/%2F%2Fevil.example",
        "/s/CODE%00",
        "/s/CODE%0d%0aLocation:%20http://evil.example",
        "/s/\\evil.example",
        "/s/%5C%5Cevil.example",
        "/s/evil.example",
        "/s/CODEx",
        "/s/" + "A" * 40,
    ],
)
def test_crafted_paths_never_redirect_elsewhere(link: dict[str, Any], path: str) -> None:
    response = get(path.replace("CODE", link["code"]))
    if response.status_code in (301, 302, 303, 307, 308):
        assert response["Location"] == link["target_url"], (path, response["Location"])
    else:
        assert response.status_code in (400, 404), (path, response.status_code)
        assert "evil" not in response.get("Location", "")


def test_forged_host_headers_do_not_matter(link: dict[str, Any]) -> None:
    response = get(f"/s/{link['code']}", HTTP_X_FORWARDED_HOST="evil.example")
    assert response.status_code == 302 and response["Location"] == link["target_url"]
    assert get(f"/s/{link['code']}", HTTP_HOST="evil.example").status_code == 400  # not an allowed host


def test_unknown_code_is_a_plain_404_page(db: Any) -> None:
    response = get("/s/Zz9Zz9Zz")
    assert response.status_code == 404 and "找不到此連結" in response.content.decode()
    assert "Location" not in response and not LinkClick.objects.exists()


def test_expired_link_gets_a_clear_page_and_no_click(link: dict[str, Any]) -> None:
    ShortLink.objects.filter(pk=link["short_link_id"]).update(expires_at=timezone.now() - timedelta(minutes=1))
    response = get(f"/s/{link['code']}")
    assert response.status_code == 410 and "Location" not in response
    html = response.content.decode()
    assert "此連結已過期" in html and "This link has expired" in html
    assert not LinkClick.objects.exists()


def test_expiry_is_checked_even_when_the_link_is_cached(link: dict[str, Any]) -> None:
    from templates.short_links import cache as link_cache

    assert get(f"/s/{link['code']}").status_code == 302
    cached_until, cached = link_cache._cache[link["code"]]
    link_cache._cache[link["code"]] = (cached_until, cached._replace(expires_at=timezone.now() - timedelta(seconds=1)))
    assert get(f"/s/{link['code']}").status_code == 410


def test_head_redirects_without_a_click_and_post_is_refused(link: dict[str, Any]) -> None:
    assert Client().head(f"/s/{link['code']}").status_code == 302
    assert Client().post(f"/s/{link['code']}", {"next": "http://evil.example"}).status_code == 405
    assert not LinkClick.objects.exists()


def test_untracked_link_records_nothing(marketing: Any) -> None:
    untracked = make_link(marketing, tracking=False)
    assert get(f"/s/{untracked['code']}")["Location"] == untracked["target_url"]
    assert not LinkClick.objects.exists()


def test_unique_clicks_per_recipient(per_recipient: dict[str, Any]) -> None:
    code = per_recipient["code"]
    for token in ("rcpt0001", "rcpt0001", "rcpt0002"):
        response = get(f"/s/{code}/{token}")
        assert response.status_code == 302 and response["Location"] == per_recipient["target_url"]
    get(f"/s/{code}/rcpt0003", ua="Mozilla/5.0 (compatible; Googlebot/2.1)")  # a link scanner
    clicks = list(LinkClick.objects.order_by("id").values_list("recipient_token", "is_unique", "device_class"))
    assert clicks == [
        ("rcpt0001", True, "mobile"),
        ("rcpt0001", False, "mobile"),
        ("rcpt0002", True, "mobile"),
        ("rcpt0003", False, "bot"),
    ]
    # The scanner did not take rcpt0003's unique click.
    get(f"/s/{code}/rcpt0003")
    assert LinkClick.objects.filter(recipient_token="rcpt0003", is_unique=True).count() == 1
    # A malformed token is not a link we issued.
    assert get(f"/s/{code}/bad!token").status_code == 404


def test_shared_link_ignores_a_recipient_suffix(link: dict[str, Any]) -> None:
    assert get(f"/s/{link['code']}/someone")["Location"] == link["target_url"]
    assert LinkClick.objects.get().recipient_token is None


@pytest.mark.parametrize(
    ("ua", "expected"),
    [
        (IPHONE, "mobile"),
        ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/124 Mobile Safari/537.36", "mobile"),
        ("Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148", "tablet"),
        ("Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 Chrome/124 Safari/537.36", "tablet"),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124 Safari/537.36", "desktop"),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Safari/605.1.15", "desktop"),
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "bot"),
        ("WhatsApp/2.23.20.0", "bot"),
        ("facebookexternalhit/1.1", "bot"),
        ("curl/8.4.0", "bot"),
        ("", "bot"),
    ],
)
def test_device_class(ua: str, expected: str) -> None:
    assert device_class(ua) == expected


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_race_two_first_clicks_make_one_unique(per_recipient: dict[str, Any]) -> None:
    barrier = threading.Barrier(4)
    statuses: list[int] = []

    def click() -> None:
        try:
            barrier.wait()
            statuses.append(get(f"/s/{per_recipient['code']}/racer001").status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=click) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert statuses == [302] * 4
    assert LinkClick.objects.count() == 4 and LinkClick.objects.filter(is_unique=True).count() == 1


def test_a_failing_click_write_still_redirects(link: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from django.db import DatabaseError

    from templates.short_links import clicks

    def down(click: Any) -> None:
        raise DatabaseError("connection lost")

    monkeypatch.setattr(clicks, "insert_one", down)
    response = get(f"/s/{link['code']}")
    assert response.status_code == 302 and response["Location"] == link["target_url"]
    assert not LinkClick.objects.exists()


def test_a_change_to_a_link_reaches_the_cache(link: dict[str, Any], settings: Any) -> None:
    assert get(f"/s/{link['code']}").status_code == 302  # now cached
    # A save in this process drops the entry at once.
    saved = ShortLink.objects.get(pk=link["short_link_id"])
    saved.expires_at = timezone.now() - timedelta(seconds=1)
    saved.save()
    assert get(f"/s/{link['code']}").status_code == 410
    # A change the process did not see (another process, or a bare UPDATE) is read again
    # once the entry is older than SMS_SHORT_LINK_CACHE_SECONDS.
    ShortLink.objects.filter(pk=link["short_link_id"]).update(expires_at=timezone.now() + timedelta(days=1))
    assert get(f"/s/{link['code']}").status_code == 410  # still the cached row
    settings.SMS_SHORT_LINK_CACHE_SECONDS = 0
    from templates.short_links import cache as link_cache

    link_cache.cache_forget(link["code"])  # as if its 10 s had passed
    assert get(f"/s/{link['code']}").status_code == 302  # read again, cached for 0 s
    ShortLink.objects.filter(pk=link["short_link_id"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert get(f"/s/{link['code']}").status_code == 410


# --- the click spool (SMS_CLICK_BATCH_SECONDS > 0, the default outside these tests) -----------


@pytest.fixture
def spool(settings: Any, tmp_path: Path) -> Iterator[Any]:
    """Spool mode, written by the test itself (no writer thread: the test's own connection and
    transaction see the links)."""
    from templates.short_links import clicks

    directory = tmp_path / "spool"
    settings.SMS_CLICK_BATCH_SECONDS = 60
    settings.SMS_CLICK_SPOOL_DIR = str(directory)
    spool = clicks.ClickSpool(directory, 60, thread=False)
    previous, clicks._spool = clicks._spool, spool
    yield spool
    with spool.lock:  # nothing is left to write at exit
        spool.count = 0
        for fd, _ in spool.sealed:
            os.close(fd)
        spool.sealed.clear()
    spool.close()
    clicks._spool = previous


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.clicks"))


def rows() -> list[tuple[str | None, bool, str]]:
    return list(
        LinkClick.objects.order_by("clicked_at", "id").values_list("recipient_token", "is_unique", "device_class")
    )


def test_spooled_clicks_cost_no_query_and_are_written_with_the_same_rules(
    per_recipient: dict[str, Any], spool: Any, django_assert_num_queries: Any
) -> None:
    from templates.models import ClickSpoolSegment
    from templates.short_links.clicks import flush_clicks

    code = per_recipient["code"]
    assert get(f"/s/{code}/rcpt0001")["Location"] == per_recipient["target_url"]  # reads the link
    with django_assert_num_queries(0):  # no health check, no lookup, no INSERT
        for token in ("rcpt0001", "rcpt0002"):
            assert get(f"/s/{code}/{token}")["Location"] == per_recipient["target_url"]
        get(f"/s/{code}/rcpt0003", ua="Googlebot/2.1")
    assert not LinkClick.objects.exists() and spool.count == 4
    assert len(segments(spool.directory)) == 1
    assert flush_clicks() == 4
    assert not segments(spool.directory)
    assert rows() == [
        ("rcpt0001", True, "mobile"),
        ("rcpt0001", False, "mobile"),  # a repeat within the same segment
        ("rcpt0002", True, "mobile"),
        ("rcpt0003", False, "bot"),  # a scanner never takes the unique click
    ]
    get(f"/s/{code}/rcpt0001")  # a repeat in a later segment
    get(f"/s/{code}/rcpt0003")  # the first human click after the scanner's
    assert flush_clicks() == 2
    assert LinkClick.objects.count() == 6
    assert sorted(
        str(t) for t in LinkClick.objects.filter(is_unique=True).values_list("recipient_token", flat=True)
    ) == [
        "rcpt0001",
        "rcpt0002",
        "rcpt0003",
    ]
    assert not ClickSpoolSegment.objects.exists()  # the ledger row goes with its file


def test_a_spooled_click_keeps_its_time_and_device(link: dict[str, Any], spool: Any) -> None:
    from templates.short_links.clicks import flush_clicks

    before = timezone.now()
    get(f"/s/{link['code']}", ua="Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) Mobile/15E148")
    after = timezone.now()
    flush_clicks()
    click = LinkClick.objects.get()
    assert before <= click.clicked_at <= after
    assert click.device_class == "tablet" and click.recipient_token is None and not click.is_unique


def test_bulk_insert_keeps_a_candidate_whose_recipient_already_has_its_unique_click(
    per_recipient: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ON CONFLICT DO NOTHING claims the unique click; the losing candidate is kept as a repeat,
    never dropped. Chunked statements (3 rows each here) keep the same rule."""
    from templates.short_links import clicks

    monkeypatch.setattr(clicks, "_rows_per_statement", lambda: 3)
    link_id = per_recipient["short_link_id"]
    now = timezone.now()
    LinkClick.objects.create(link_id=link_id, recipient_token="old00001", device_class="mobile", is_unique=True)
    batch: list[Click] = [
        (link_id, now + timedelta(milliseconds=n), "mobile", f"new{n % 4:05d}", True) for n in range(8)
    ]
    batch += [(link_id, now, "mobile", "old00001", True), (link_id, now, "desktop", None, False)]
    assert clicks.insert_clicks(batch) == 4  # new00000..new00003; old00001 had its unique click
    assert LinkClick.objects.count() == 11
    assert sorted(
        str(t) for t in LinkClick.objects.filter(is_unique=True).values_list("recipient_token", flat=True)
    ) == [
        "new00000",
        "new00001",
        "new00002",
        "new00003",
        "old00001",
    ]
    for token in ("new00000", "new00001", "new00002", "new00003"):  # each one's earliest click
        first = LinkClick.objects.filter(recipient_token=token).order_by("clicked_at").first()
        assert first is not None and first.is_unique


@pytest.mark.process  # a child process
def test_a_killed_worker_loses_no_click_and_the_beat_task_writes_them(
    link: dict[str, Any], spool: Any, tmp_path: Path
) -> None:
    """A process SIGKILLed with clicks in its segment: the beat task writes every one of them."""
    from templates.models import ClickSpoolSegment
    from templates.tasks import drain_click_spool

    child = f"""
import os, signal, django
django.setup()
from templates.short_links import clicks
clicks._spool = clicks.ClickSpool(clicks.spool_dir(), 60, thread=False)  # this process has no database
for n in range(250):
    clicks.record_click({link["short_link_id"]}, device="mobile", recipient=None)
print("recorded", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "smsplatform.settings_test",
        "SMS_VAR_DIR": str(tmp_path / "var"),
        "SMS_CLICK_BATCH_SECONDS": "60",
        "SMS_CLICK_SPOOL_DIR": str(spool.directory),
    }
    done = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL and done.stdout.strip() == "recorded", done.stderr[-2000:]
    assert len(segments(spool.directory)) == 1 and not LinkClick.objects.exists()
    # A ledger row left by a drain that died before deleting it is pruned on the way.
    ClickSpoolSegment.objects.create(name="stale", clicks=1, written_at=timezone.now() - timedelta(days=2))
    assert drain_click_spool.apply().get(disable_sync_subtasks=False) == 250
    assert LinkClick.objects.filter(link_id=link["short_link_id"], device_class="mobile").count() == 250
    assert not segments(spool.directory) and not ClickSpoolSegment.objects.exists()
    assert drain_click_spool.apply().get(disable_sync_subtasks=False) == 0


def test_a_segment_committed_but_not_deleted_is_not_written_twice(
    link: dict[str, Any], spool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer dies between COMMIT and deleting the file: the ledger row makes the next drain
    delete the file without writing its clicks again."""
    from templates.short_links import clicks

    for _ in range(5):
        get(f"/s/{link['code']}")
    real_unlink = os.unlink

    def die(path: Any) -> None:
        raise KeyboardInterrupt("killed after COMMIT")

    monkeypatch.setattr(clicks.os, "unlink", die)
    with pytest.raises(KeyboardInterrupt):
        spool.flush()
    monkeypatch.setattr(clicks.os, "unlink", real_unlink)
    assert LinkClick.objects.count() == 5 and len(segments(spool.directory)) == 1
    fd, _ = spool.sealed.pop()  # the process is gone, and its lock with it
    os.close(fd)
    assert clicks.drain_spool(spool.directory) == 0
    assert LinkClick.objects.count() == 5 and not segments(spool.directory)


def test_a_drain_never_writes_a_segment_its_owner_wrote_meanwhile(
    link: dict[str, Any], spool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drain opens a segment, then its owner writes and deletes it and lets go of the lock
    before the drain's flock(): the drain must see the file is gone, not write it again."""
    import fcntl

    from templates.short_links import clicks

    for _ in range(3):
        get(f"/s/{link['code']}")
    real_flock = fcntl.flock
    raced: list[bool] = []

    def owner_first(fd: int, operation: int) -> None:
        if not raced:
            raced.append(True)
            assert spool.flush() == 3  # written, file deleted, lock released
        real_flock(fd, operation)

    monkeypatch.setattr(clicks.fcntl, "flock", owner_first)
    assert clicks.drain_spool(spool.directory) == 0
    assert raced and LinkClick.objects.count() == 3


def test_segments_wait_on_disk_while_the_database_is_down(
    link: dict[str, Any], spool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db import DatabaseError

    from templates.short_links import clicks

    for _ in range(3):
        get(f"/s/{link['code']}")
    real = clicks._write_once

    def down(*args: Any, **kwargs: Any) -> int:
        raise DatabaseError("connection lost")

    monkeypatch.setattr(clicks, "_write_once", down)
    with pytest.raises(DatabaseError):
        spool.flush()
    get(f"/s/{link['code']}")  # clicks keep coming, into a new segment
    assert len(segments(spool.directory)) == 2 and not LinkClick.objects.exists()
    # Another process's drain does not take the segments this live process holds.
    assert clicks.drain_spool(spool.directory) == 0
    monkeypatch.setattr(clicks, "_write_once", real)
    assert spool.flush() == 4
    assert LinkClick.objects.count() == 4 and not segments(spool.directory)


def test_an_unwritable_spool_falls_back_to_the_insert(link: dict[str, Any], settings: Any, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    settings.SMS_CLICK_BATCH_SECONDS = 60
    settings.SMS_CLICK_SPOOL_DIR = str(blocker / "clicks")
    assert get(f"/s/{link['code']}").status_code == 302
    assert LinkClick.objects.count() == 1  # written during the request


def test_unreadable_and_torn_lines_are_skipped_and_the_rest_kept() -> None:
    from templates.short_links.clicks import decode, encode

    good = encode(7, 1_700_000_000_123_456, "mobile", "rcpt0001", True)
    good += encode(7, 1_700_000_000_200_000, "bot", None, False)
    data = b"garbage\n7\tx\tmobile\t\t0\n" + good + b"7\t17000"  # ends in a torn line
    clicks = decode(data, "test")
    assert [(c[0], c[2], c[3], c[4]) for c in clicks] == [(7, "mobile", "rcpt0001", True), (7, "bot", None, False)]
    assert clicks[0][1].isoformat() == "2023-11-14T22:13:20.123456+00:00"


def test_a_segment_with_a_bad_line_keeps_its_good_ones(per_recipient: dict[str, Any], spool: Any) -> None:
    """On PostgreSQL the server parses the segment; a line it rejects sends the segment through
    the line-by-line path, which skips that line only (and the torn last line of a crash)."""
    from templates.short_links.clicks import drain_spool, encode

    link_id = per_recipient["short_link_id"]
    good = [encode(link_id, 1_700_000_000_000_000 + n, "mobile", f"seg{n % 3:05d}", True) for n in range(6)]
    bad = [
        b"not a click\n",
        encode(link_id, 1_700_000_000_000_100, "mobile", None, True),  # a unique candidate needs a recipient
        encode(link_id, 1_700_000_000_000_101, "mobile", None, False).replace(b"mobile", b"phone"),
    ]
    (spool.directory / "0badline.clicks").write_bytes(b"".join(good[:3] + bad + good[3:]) + b"7\t17")
    assert drain_spool(spool.directory) == 6
    assert LinkClick.objects.count() == 6 and LinkClick.objects.filter(is_unique=True).count() == 3
    assert not segments(spool.directory)


@pytest.mark.django_db(transaction=True)
def test_the_writer_thread_writes_clicks_by_itself_and_close_writes_the_rest(
    per_recipient: dict[str, Any], settings: Any, tmp_path: Path
) -> None:
    from templates.short_links import clicks

    settings.SMS_CLICK_BATCH_SECONDS = 0.05
    settings.SMS_CLICK_SPOOL_DIR = str(tmp_path / "spool")
    code = per_recipient["code"]
    try:
        for n in range(40):
            get(f"/s/{code}/rcpt{n % 10:04d}")
        deadline = time.monotonic() + 20
        while LinkClick.objects.count() < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert LinkClick.objects.count() == 40 and LinkClick.objects.filter(is_unique=True).count() == 10
        spool = clicks._spool
        assert spool is not None and spool.thread is not None
        spool.stop()  # no thread from here: what comes now is written by close() (atexit)
        assert not spool.thread.is_alive()
        for n in range(5):
            get(f"/s/{code}/late{n:04d}")
        assert LinkClick.objects.count() == 40
        spool.close()
        assert LinkClick.objects.count() == 45 and not segments(tmp_path / "spool")
        get(f"/s/{code}/after001")  # after close a click is written in the request
        assert LinkClick.objects.count() == 46
    finally:
        if clicks._spool is not None:
            clicks._spool.close()
        clicks._spool = None


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_race_two_writers_make_one_unique_click_each_and_keep_every_click(per_recipient: dict[str, Any]) -> None:
    """Four processes' segments holding the same recipients' first clicks, written at once."""
    from django.db import transaction

    from templates.short_links.clicks import insert_clicks

    link_id = per_recipient["short_link_id"]
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            batch = [(link_id, timezone.now(), "mobile", f"racer{k:03d}", True) for k in range(20)]
            with transaction.atomic():
                barrier.wait()
                insert_clicks(batch)
        except BaseException as error:  # reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert LinkClick.objects.count() == 80 and LinkClick.objects.filter(is_unique=True).count() == 20


def test_a_trailing_newline_is_not_part_of_a_code_or_token(per_recipient: dict[str, Any]) -> None:
    assert get(f"/s/{per_recipient['code']}%0A").status_code == 404
    assert get(f"/s/{per_recipient['code']}/rcpt0001%0A").status_code == 404
    assert not LinkClick.objects.exists()
