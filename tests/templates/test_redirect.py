"""The /s/<code> redirect: only ever the stored target, clicks recorded, expired links explained."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from templates.models import DeviceClass, LinkClick, ShortLink
from templates.views import device_class
from tests.conftest import postgres_only
from tests.templates.conftest import make_link

pytestmark = pytest.mark.django_db

IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148 Safari/604.1"


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
    from templates import views

    assert get(f"/s/{link['code']}").status_code == 302
    cached_until, cached = views._cache[link["code"]]
    views._cache[link["code"]] = (cached_until, cached._replace(expires_at=timezone.now() - timedelta(seconds=1)))
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


# --- batched click writing (SMS_CLICK_BATCH_SECONDS > 0) ---------------------------------------


@pytest.fixture
def batcher(monkeypatch: pytest.MonkeyPatch, settings: Any) -> Any:
    """Batch mode with the queue flushed by the test itself (no writer thread, same connection)."""
    import os

    from templates import views

    settings.SMS_CLICK_BATCH_SECONDS = 60
    queue = views.ClickBatcher(60)
    queue.pid = os.getpid()  # as if this process had started its writer already
    monkeypatch.setattr(views, "_batcher", queue)
    return queue


def test_batched_clicks_are_written_on_flush_with_the_same_rules(per_recipient: dict[str, Any], batcher: Any) -> None:
    from templates.views import flush_clicks

    code = per_recipient["code"]
    for token in ("rcpt0001", "rcpt0001", "rcpt0002"):
        assert get(f"/s/{code}/{token}")["Location"] == per_recipient["target_url"]
    get(f"/s/{code}/rcpt0003", ua="Googlebot/2.1")
    assert not LinkClick.objects.exists() and len(batcher.queue) == 4
    flush_clicks()
    clicks = list(LinkClick.objects.order_by("id").values_list("recipient_token", "is_unique", "device_class"))
    assert clicks == [
        ("rcpt0001", True, "mobile"),
        ("rcpt0001", False, "mobile"),  # a repeat within the same batch
        ("rcpt0002", True, "mobile"),
        ("rcpt0003", False, "bot"),
    ]
    get(f"/s/{code}/rcpt0001")  # a repeat in a later batch
    flush_clicks()
    assert LinkClick.objects.filter(recipient_token="rcpt0001", is_unique=True).count() == 1
    assert LinkClick.objects.count() == 5 and not batcher.queue


def test_batch_writes_in_chunks_and_keeps_clicks_when_the_database_fails(
    link: dict[str, Any], batcher: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db import DatabaseError

    from templates import views

    for _ in range(views.ClickBatcher.MAX_BATCH + 5):
        views.record_click(views._link(link["code"]), device="mobile", recipient=None)  # type: ignore[arg-type]
    real = views._insert_batch

    def down(clicks: list[Any]) -> None:
        raise DatabaseError("connection lost")

    monkeypatch.setattr(views, "_insert_batch", down)
    monkeypatch.setattr(views.time, "sleep", lambda s: None)
    monkeypatch.setattr(views.connection, "close", lambda: None)
    batcher.flush()
    assert len(batcher.queue) == views.ClickBatcher.MAX_BATCH + 5  # kept for the next attempt
    monkeypatch.setattr(views, "_insert_batch", real)
    batcher.flush()
    assert LinkClick.objects.count() == views.ClickBatcher.MAX_BATCH and len(batcher.queue) == 5
    batcher.flush()
    assert LinkClick.objects.count() == views.ClickBatcher.MAX_BATCH + 5


def test_a_failing_click_write_still_redirects(link: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from django.db import DatabaseError

    from templates import views

    def down(click: Any) -> None:
        raise DatabaseError("connection lost")

    monkeypatch.setattr(views, "_insert_one", down)
    response = get(f"/s/{link['code']}")
    assert response.status_code == 302 and response["Location"] == link["target_url"]


def test_a_trailing_newline_is_not_part_of_a_code_or_token(per_recipient: dict[str, Any]) -> None:
    assert get(f"/s/{per_recipient['code']}%0A").status_code == 404
    assert get(f"/s/{per_recipient['code']}/rcpt0001%0A").status_code == 404
    assert not LinkClick.objects.exists()
