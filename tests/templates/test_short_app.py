"""The short domain's WSGI application (templates.short_links.app): the same rules as the Django view.

Requests go straight to the WSGI callable, as gunicorn calls it (PATH_INFO percent-decoded and
latin-1, like every WSGI server); one test runs the production server itself.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.utils import timezone

from templates.models import DeviceClass, LinkClick, ShortLink
from templates.short_links.rules import short_domain_forget
from tests.support.db import postgres_only
from tests.support.short_app import call
from tests.support.templates import IPHONE, make_link

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]

OPEN_REDIRECT_SUFFIXES = [
    "?next=http://evil.example/",
    "?url=https%3A%2F%2Fevil.example",
    "?redirect=//evil.example",
    "?next=javascript:alert(1)",
    "/",
    "?%0d%0aLocation:%20http://evil.example",
]

CRAFTED_PATHS = [
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
    "/s/CODE//",
    "/s/CODE%0A",
    "/S/CODE",
    "//s/CODE",
    "/admin/",
    "/",
]


@pytest.fixture(autouse=True)
def _keep_the_test_transactions_connection() -> Iterator[None]:
    """What Django's test Client does: request_started must not close the connection that holds
    the test's transaction."""
    from django.core.signals import request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)


@pytest.fixture(autouse=True)
def _short_domain_read_per_test() -> Iterator[None]:
    short_domain_forget()
    yield
    short_domain_forget()


@pytest.fixture
def link(marketing: Any) -> dict[str, Any]:
    return make_link(marketing)


@pytest.fixture
def per_recipient(marketing: Any) -> dict[str, Any]:
    return make_link(marketing, "https://shop.example.hk/vip", per_recipient=True)


def test_redirects_to_the_stored_target_and_records_the_click(link: dict[str, Any]) -> None:
    answer = call(f"/s/{link['code']}")
    assert answer.status_code == 302 and answer["Location"] == link["target_url"]
    assert answer["Cache-Control"] == "no-store, private" and answer["Referrer-Policy"] == "no-referrer"
    assert answer["X-Robots-Tag"] == "noindex" and answer["X-Content-Type-Options"] == "nosniff"
    assert answer.content == b"" and answer["Content-Length"] == "0"
    assert len(answer.header_list) == len(answer.headers)  # no header twice
    click = LinkClick.objects.get()
    assert click.link_id == link["short_link_id"] and click.device_class == DeviceClass.MOBILE
    assert click.recipient_token is None and click.is_unique is False
    assert timezone.now() - click.clicked_at < timedelta(seconds=5)


@pytest.mark.parametrize("suffix", OPEN_REDIRECT_SUFFIXES)
def test_nothing_in_the_request_changes_the_target(link: dict[str, Any], suffix: str) -> None:
    answer = call(f"/s/{link['code']}{suffix}")
    assert answer.status_code == 302 and answer["Location"] == link["target_url"]


@pytest.mark.parametrize("path", CRAFTED_PATHS)
def test_crafted_paths_and_other_paths_are_a_404_page(link: dict[str, Any], path: str) -> None:
    answer = call(path.replace("CODE", link["code"]))
    assert answer.status_code == 404 and "Location" not in answer, path
    assert "找不到此連結" in answer.content.decode() and answer["Cache-Control"] == "no-store"
    assert not LinkClick.objects.exists()


def test_only_allowed_hosts(link: dict[str, Any], settings: Any) -> None:
    assert call(f"/s/{link['code']}", host="evil.example").status_code == 400
    assert call(f"/s/{link['code']}", host="").status_code == 302  # SERVER_NAME is allowed
    settings.ALLOWED_HOSTS = ["s.example.hk"]
    assert call(f"/s/{link['code']}").status_code == 400
    answer = call(f"/s/{link['code']}", host="s.example.hk:443")
    assert answer.status_code == 302 and answer["Location"] == link["target_url"]
    assert LinkClick.objects.count() == 2


def test_unknown_code_is_a_404_page(db: Any) -> None:
    answer = call("/s/Zz9Zz9Zz")
    assert answer.status_code == 404 and "找不到此連結" in answer.content.decode()
    assert answer["X-Robots-Tag"] == "noindex" and "Location" not in answer


def test_expired_link_gets_a_clear_page_and_no_click(link: dict[str, Any]) -> None:
    ShortLink.objects.filter(pk=link["short_link_id"]).update(expires_at=timezone.now() - timedelta(minutes=1))
    answer = call(f"/s/{link['code']}")
    assert answer.status_code == 410 and "Location" not in answer
    html = answer.content.decode()
    assert "此連結已過期" in html and "This link has expired" in html
    assert not LinkClick.objects.exists()


def test_expiry_is_checked_even_when_the_link_is_cached(link: dict[str, Any]) -> None:
    from templates.short_links import cache as link_cache

    assert call(f"/s/{link['code']}").status_code == 302
    cached_until, cached = link_cache._cache[link["code"]]
    link_cache._cache[link["code"]] = (cached_until, cached._replace(expires_at=timezone.now() - timedelta(seconds=1)))
    assert call(f"/s/{link['code']}").status_code == 410
    assert LinkClick.objects.count() == 1


def test_a_change_to_a_link_reaches_the_cache(link: dict[str, Any], settings: Any) -> None:
    from templates.short_links import cache as link_cache

    assert call(f"/s/{link['code']}").status_code == 302  # now cached
    saved = ShortLink.objects.get(pk=link["short_link_id"])
    saved.expires_at = timezone.now() - timedelta(seconds=1)
    saved.save()  # a save in this process drops the entry at once
    assert call(f"/s/{link['code']}").status_code == 410
    ShortLink.objects.filter(pk=link["short_link_id"]).update(expires_at=timezone.now() + timedelta(days=1))
    assert call(f"/s/{link['code']}").status_code == 410  # still cached
    settings.SMS_SHORT_LINK_CACHE_SECONDS = 0
    link_cache.cache_forget(link["code"])  # as if its TTL had passed
    assert call(f"/s/{link['code']}").status_code == 302


def test_head_redirects_without_a_click_and_post_is_refused(link: dict[str, Any]) -> None:
    head = call(f"/s/{link['code']}", method="HEAD")
    assert head.status_code == 302 and head["Location"] == link["target_url"]
    post = call(f"/s/{link['code']}", method="POST")
    assert post.status_code == 405 and post["Allow"] == "GET, HEAD" and "Location" not in post
    assert call("/s/Zz9Zz9Zz", method="HEAD").content == b""
    assert not LinkClick.objects.exists()


def test_untracked_link_records_nothing(marketing: Any) -> None:
    untracked = make_link(marketing, tracking=False)
    assert call(f"/s/{untracked['code']}")["Location"] == untracked["target_url"]
    assert not LinkClick.objects.exists()


def test_unique_clicks_per_recipient(per_recipient: dict[str, Any]) -> None:
    code = per_recipient["code"]
    for token in ("rcpt0001", "rcpt0001", "rcpt0002"):
        answer = call(f"/s/{code}/{token}")
        assert answer.status_code == 302 and answer["Location"] == per_recipient["target_url"]
    call(f"/s/{code}/rcpt0003", ua="Mozilla/5.0 (compatible; Googlebot/2.1)")
    call(f"/s/{code}/rcpt0004", ua=None)  # no User-Agent at all: a bot
    clicks = list(LinkClick.objects.order_by("id").values_list("recipient_token", "is_unique", "device_class"))
    assert clicks == [
        ("rcpt0001", True, "mobile"),
        ("rcpt0001", False, "mobile"),
        ("rcpt0002", True, "mobile"),
        ("rcpt0003", False, "bot"),
        ("rcpt0004", False, "bot"),
    ]
    assert call(f"/s/{code}/bad!token").status_code == 404
    assert call(f"/s/{code}/rcpt0001%0A").status_code == 404
    assert LinkClick.objects.count() == 5


def test_shared_link_ignores_a_recipient_suffix(link: dict[str, Any]) -> None:
    assert call(f"/s/{link['code']}/someone")["Location"] == link["target_url"]
    assert LinkClick.objects.get().recipient_token is None


def test_a_failing_click_write_still_redirects(link: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from django.db import DatabaseError

    from templates.short_links import clicks

    def down(click: Any) -> None:
        raise DatabaseError("connection lost")

    monkeypatch.setattr(clicks, "insert_one", down)
    answer = call(f"/s/{link['code']}")
    assert answer.status_code == 302 and answer["Location"] == link["target_url"]


def test_an_unexpected_error_is_a_500_page_without_location(
    link: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from templates.short_links import app as short_app

    def broken(code: str) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(short_app, "cached_link", broken)
    answer = call(f"/s/{link['code']}")
    assert answer.status_code == 500 and "Location" not in answer


@pytest.fixture
def spool(settings: Any, tmp_path: Path) -> Iterator[Any]:
    from templates.short_links import clicks

    directory = tmp_path / "spool"
    settings.SMS_CLICK_BATCH_SECONDS = 60
    settings.SMS_CLICK_SPOOL_DIR = str(directory)
    spool = clicks.ClickSpool(directory, 60, thread=False)
    previous, clicks._spool = clicks._spool, spool
    yield spool
    spool.close()
    clicks._spool = previous


def test_a_cached_link_and_a_spooled_click_cost_no_query(
    per_recipient: dict[str, Any], spool: Any, django_assert_num_queries: Any
) -> None:
    from templates.short_links.clicks import flush_clicks

    code = per_recipient["code"]
    assert call(f"/s/{code}/rcpt0001")["Location"] == per_recipient["target_url"]  # reads the link
    with django_assert_num_queries(0):
        for token in ("rcpt0001", "rcpt0002"):
            assert call(f"/s/{code}/{token}")["Location"] == per_recipient["target_url"]
        call(f"/s/{code}/rcpt0003", ua="Googlebot/2.1")
    assert not LinkClick.objects.exists() and spool.count == 4
    assert flush_clicks() == 4
    assert list(LinkClick.objects.order_by("clicked_at", "id").values_list("recipient_token", "is_unique")) == [
        ("rcpt0001", True),
        ("rcpt0001", False),
        ("rcpt0002", True),
        ("rcpt0003", False),
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


@pytest.mark.process  # gunicorn
@postgres_only  # the server's processes need the test database (SQLite's is in memory)
@pytest.mark.django_db(transaction=True)
def test_the_production_server_redirects_and_its_clicks_survive_sigkill(link: dict[str, Any], tmp_path: Path) -> None:
    """templates.short_links.server's gunicorn, as make run and production start it; SIGKILLed right
    after its answers, then the beat task's drain writes every click once."""
    from django.db import connection

    from templates.short_links import server as short_server
    from templates.short_links.clicks import drain_spool

    spool_dir = tmp_path / "spool"
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "smsplatform.settings",
        "SMS_VAR_DIR": str(tmp_path / "var"),
        "SMS_CLICK_BATCH_SECONDS": "60",
        "SMS_CLICK_SPOOL_DIR": str(spool_dir),
        "DJANGO_SECRET_KEY": "test-" + "x" * 50,
    }
    env["DATABASE_URL"] = urlunsplit(urlsplit(os.environ["DATABASE_URL"])._replace(path="/" + db["NAME"]))
    port = _free_port()
    command = short_server.gunicorn_command(f"127.0.0.1:{port}", workers=1)
    server = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        request = f"GET /s/{link['code']}?next=//evil.example HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        for _ in range(3):
            answer = _http(port, (request + f"User-Agent: {IPHONE}\r\n\r\n").encode())
            assert answer.startswith(b"HTTP/1.1 302 "), answer[:200]
            assert f"\r\nLocation: {link['target_url']}\r\n".encode() in answer
        assert _http(port, b"GET /admin/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").startswith(b"HTTP/1.1 404 ")
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(30)
        # The master is reaped; its worker may take a moment longer to die and let go of its spool
        # segment's lock (until then the drain rightly leaves the segment to its live owner).
        for _ in range(300):
            try:
                os.killpg(server.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
    # The worker's writer thread flushes once as it starts (it may have written the first click);
    # the rest waited in the killed worker's segment.
    written_by_the_server = LinkClick.objects.count()
    assert drain_spool(spool_dir) == 3 - written_by_the_server
    assert LinkClick.objects.filter(link_id=link["short_link_id"], device_class="mobile").count() == 3
    assert drain_spool(spool_dir) == 0


def test_runplatform_starts_the_short_domain_server() -> None:
    from templates.short_links import server as short_server

    command = short_server.gunicorn_command("127.0.0.1:9999", workers=2, python=sys.executable)
    assert (
        "templates.short_links.wsgi:application" in command and command[command.index("--bind") + 1] == "127.0.0.1:9999"
    )
    source = (ROOT / "smsplatform/management/commands/runplatform.py").read_text()
    assert 'SHORT_SERVER = "templates.short_links.server"' in source and '"-m", SHORT_SERVER' in source


def test_the_configured_short_domain_is_served(link: dict[str, Any], settings: Any) -> None:
    """The short server answers on the configured short domain even when ALLOWED_HOSTS names only
    the main site, and on localhost:port under the embedded default's ALLOWED_HOSTS."""
    assert call(f"/s/{link['code']}", host="localhost:8001").status_code == 302
    assert call(f"/s/{link['code']}", host="127.0.0.1:8001").status_code == 302
    settings.ALLOWED_HOSTS = ["sms.example.hk"]
    for host in ("s.example.hk", "s.example.hk:8001", "S.EXAMPLE.HK"):
        answer = call(f"/s/{link['code']}", host=host)
        assert answer.status_code == 302 and answer["Location"] == link["target_url"], host
    assert call(f"/s/{link['code']}", host="evil.example").status_code == 400
    assert call(f"/s/{link['code']}", host="x.s.example.hk").status_code == 400

    from gateways.platform_config import platform_config_update
    from smsplatform.config_service import platform_config_get
    from smsplatform.kernel.actor import Actor

    config = platform_config_get()
    platform_config_update(
        actor=Actor.system("test"),
        changes={"short_links": {**config["config"]["short_links"], "domain": "go.shop-example.hk"}},
        base_version_token=config["base_version_token"],
        idempotency_key="short-domain-change",
    )
    short_domain_forget()  # another process re-reads it within SMS_SHORT_LINK_CACHE_SECONDS
    assert call(f"/s/{link['code']}", host="go.shop-example.hk").status_code == 302
    assert call(f"/s/{link['code']}", host="s.example.hk").status_code == 400
