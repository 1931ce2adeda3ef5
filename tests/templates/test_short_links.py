"""short_link_preview and short_link_create: each risk case, preview ids, approval, races."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from compliance.models import ActionRequest, RequestState
from compliance.services import action_request_approve
from smsplatform.kernel.actor import Channel
from smsplatform.kernel.errors import ApplicationError, ErrorCode
from smsplatform.kernel.previews import preview_store
from smsplatform.models import AuditLog, Preview
from templates.models import ShortLink
from tests.support.actors import actor
from tests.support.db import postgres_only, race
from tests.support.templates import UTM, config_change, create, key, preview

pytestmark = pytest.mark.django_db


def refused(user: Any, url: str = "https://shop.example.hk/", **kw: Any) -> ApplicationError:
    with pytest.raises(ApplicationError) as err:
        preview(user, url, **kw)
    return err.value


# --- preview ------------------------------------------------------------------------------


def test_preview_shows_the_short_url_and_stores_what_it_showed(marketing: Any) -> None:
    out = preview(marketing, "https://Shop.Example.hk/spring?ref=sms#top")
    assert out["short_url"] == f"https://s.example.hk/s/{out['code']}" and len(out["code"]) == 8
    assert out["short_url_characters"] == len(out["short_url"])
    assert out["target_url"] == (
        "https://shop.example.hk/spring?ref=sms&utm_source=sms&utm_medium=sms&utm_campaign=spring#top"
    )
    assert out["landing_host"] == "shop.example.hk" and out["utm"] == UTM
    assert out["tracking"] is True and out["per_recipient"] is False and out["sensitive"] is False
    expires = datetime.fromisoformat(out["expires_at"])
    assert timedelta(days=29, hours=23) < expires - timezone.now() <= timedelta(days=30)
    stored = Preview.objects.get(pk=out["short_link_preview_id"])
    assert stored.kind == "short_links" and stored.user == marketing and stored.result["code"] == out["code"]
    assert not ShortLink.objects.exists() and not AuditLog.objects.exists()


def test_utm_already_in_the_url_is_kept(marketing: Any) -> None:
    out = preview(marketing, "https://shop.example.hk/?utm_source=sms&utm_medium=sms&utm_campaign=x", utm={})
    assert out["target_url"] == "https://shop.example.hk/?utm_source=sms&utm_medium=sms&utm_campaign=x"


def test_per_recipient_length(marketing: Any) -> None:
    out = preview(marketing, per_recipient=True)
    assert out["per_recipient_url_characters"] == out["short_url_characters"] + 9
    assert out["per_recipient_url_example"].startswith(out["short_url"] + "/")


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("", "url_invalid"),
        ("   ", "url_invalid"),
        ("javascript:alert(1)", "url_scheme_not_allowed"),
        ("JAVASCRIPT:alert(1)", "url_scheme_not_allowed"),
        ("data:text/html,<script>x</script>", "url_scheme_not_allowed"),
        ("ftp://shop.example.hk/file", "url_scheme_not_allowed"),
        ("mailto:a@shop.example.hk", "url_scheme_not_allowed"),
        ("//evil.example/", "url_scheme_not_allowed"),
        ("shop.example.hk/spring", "url_scheme_not_allowed"),
        ("https://user:pass@shop.example.hk/", "url_credentials"),
        ("https://shop.example.hk@evil.example/", "url_credentials"),
        ("http://192.168.1.10/login", "url_ip_literal"),
        ("http://[::1]/", "url_ip_literal"),
        ("http://2130706433/", "url_ip_literal"),
        ("http://0x7f.1/", "url_ip_literal"),
        ("http://127.1/", "url_ip_literal"),
        ("https://xn--pple-43d.com/", "url_lookalike_domain"),
        ("https://аpple.com/", "url_lookalike_domain"),  # Cyrillic а
        ("https://bit.ly/abc", "url_shortener"),
        ("https://t.co/abc", "url_shortener"),
        ("https://www.tinyurl.com/abc", "url_shortener"),
        ("https://s.example.hk/s/abcdefgh", "url_shortener"),  # our own short domain: a loop
        ("https://localhost/", "url_invalid"),
        ("https://intranet/", "url_invalid"),
        ("https://shop.example.hk\\@evil.example/", "url_invalid"),
        ("https://shop.example.hk/a b", "url_invalid"),
        ("https://shop.example.hk/\x00", "url_invalid"),
        ("https://shop.example.hk/\ud800", "url_invalid"),
        ("https://shop.example.hk:99999/", "url_invalid"),
        ("https://shop.example.hk/" + "a" * 3000, "url_invalid"),
        ("https://-bad-.example/", "url_invalid"),
    ],
)
def test_risky_urls_are_refused(marketing: Any, url: str, code: str) -> None:
    err = refused(marketing, url)
    assert (err.code, err.field) == (code, "url"), err.as_dict()
    assert err.hint
    assert not Preview.objects.exists()


def test_deny_and_allow_lists(marketing: Any, technical: Any) -> None:
    config_change(technical, short_links={"deny_domains": ["evil.example"]})
    assert refused(marketing, "https://evil.example/").code == "url_domain_denied"
    assert refused(marketing, "https://www.evil.example/").code == "url_domain_denied"
    assert preview(marketing, "https://notevil.example/")["landing_host"] == "notevil.example"
    config_change(technical, short_links={"allow_domains": ["shop.example.hk", "xn--fiqz9s.hk"]})
    assert refused(marketing, "https://other.example.hk/").code == "url_domain_not_allowed"
    assert preview(marketing, "https://m.shop.example.hk/")["landing_host"] == "m.shop.example.hk"
    # An IDN host is fine when compliance allowed it explicitly.
    idn = preview(marketing, "https://中國.hk/頁面")
    assert idn["landing_host"] == "xn--fiqz9s.hk"
    assert idn["target_url"].startswith("https://xn--fiqz9s.hk/%E9%A0%81%E9%9D%A2?utm_source=sms")


@pytest.mark.parametrize(
    ("url", "utm", "code", "field"),
    [
        ("https://shop.example.hk/", {"utm_source": "sms"}, "utm_missing", "utm"),
        ("https://shop.example.hk/", {**UTM, "utm_campaign": "spring sale"}, "utm_malformed", "utm.utm_campaign"),
        ("https://shop.example.hk/", {**UTM, "utm_campaign": ""}, "utm_malformed", "utm.utm_campaign"),
        ("https://shop.example.hk/", {**UTM, "utm_campaign": "a&b=c"}, "utm_malformed", "utm.utm_campaign"),
        ("https://shop.example.hk/", {**UTM, "utm_evil": "x"}, "utm_malformed", "utm.utm_evil"),
        ("https://shop.example.hk/?utm_source=web", UTM, "utm_malformed", "utm.utm_source"),
        ("https://shop.example.hk/?utm_source=a&utm_source=b", {}, "utm_malformed", "url"),
        ("https://shop.example.hk/?UTM_SOURCE=a", {}, "utm_malformed", "url"),
        ("https://shop.example.hk/?utm_foo=a", {}, "utm_malformed", "url"),
        ("https://shop.example.hk/?utm_source=%20x&utm_medium=a&utm_campaign=b", {}, "utm_malformed", "url"),
    ],
)
def test_utm_must_be_present_and_well_formed(
    marketing: Any, url: str, utm: dict[str, str], code: str, field: str
) -> None:
    err = refused(marketing, url, utm=utm)
    assert (err.code, err.field) == (code, field), err.as_dict()
    if code == "utm_missing":
        assert err.details["missing"] == ["utm_medium", "utm_campaign"]


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"expires_at": "2001-01-01T00:00:00+08:00"}, "expires_at"),
        ({"expires_at": "tomorrow"}, "expires_at"),
        ({"expiry_days": 366}, "expiry_days"),
        ({"expiry_days": 0}, "expiry_days"),
        ({"expires_at": "2999-01-01T00:00:00+00:00"}, "expires_at"),
        ({"expires_at": "2030-01-01T00:00:00+08:00", "expiry_days": 3}, "expires_at"),
    ],
)
def test_expiry_must_be_future_and_within_policy(marketing: Any, kw: dict[str, Any], field: str) -> None:
    err = refused(marketing, **kw)
    assert (err.code, err.field) == ("expiry_invalid", field), err.as_dict()


def test_expiry_now_and_naive_times(marketing: Any) -> None:
    assert refused(marketing, expires_at=timezone.now().isoformat()).code == "expiry_invalid"
    soon = (timezone.localtime() + timedelta(days=2)).replace(tzinfo=None).isoformat()
    out = preview(marketing, expires_at=soon)  # naive: the schedule's time zone (Hong Kong)
    assert out["expires_at"].endswith("+08:00")
    assert preview(marketing, expiry_days=7)["expires_at"]


def test_tracking_follows_the_policy(marketing: Any, technical: Any) -> None:
    assert "not recorded" in preview(marketing, tracking=False)["warnings"][0]
    assert refused(marketing, tracking=False, per_recipient=True).code == "tracking_not_permitted"
    config_change(technical, tracking={"per_recipient_links": False})
    err = refused(marketing, per_recipient=True)
    assert (err.code, err.field) == ("tracking_not_permitted", "per_recipient")
    config_change(technical, tracking={"click_tracking": False})
    assert refused(marketing, tracking=True).code == "tracking_not_permitted"
    assert preview(marketing)["tracking"] is False  # the default follows the policy


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://shop.example.hk/checkout/pay", "keyword 'pay'"),
        ("https://shop.example.hk/payment?order=1", "keyword 'payment'"),
        ("https://bank.example.hk/", "keyword 'bank'"),
        ("https://www.paypal.com/hk/home", "payment host paypal.com"),
        ("https://shop.example.hk/wallet-topup", "keyword 'wallet'"),
    ],
)
def test_sensitive_landing_pages_are_flagged(marketing: Any, url: str, reason: str) -> None:
    out = preview(marketing, url)
    assert out["sensitive"] is True and any(reason in r for r in out["sensitive_reasons"]), out["sensitive_reasons"]
    assert out["needs_approval_hint"]


def test_plain_http_and_odd_ports_warn(marketing: Any) -> None:
    out = preview(marketing, "http://shop.example.hk:8080/")
    assert len(out["warnings"]) == 2


# --- create -----------------------------------------------------------------------------


def test_create_from_preview(marketing: Any) -> None:
    shown = preview(marketing, campaign_id=12)
    result = create(marketing, shown["short_link_preview_id"])
    assert result["status"] == "executed"
    link = ShortLink.objects.get()
    assert (link.code, link.target_url, link.campaign_id) == (shown["code"], shown["target_url"], 12)
    assert (
        link.owner == marketing
        and link.created_by == marketing
        and str(link.preview_id) == shown["short_link_preview_id"]
    )
    assert result["result"]["short_url"] == shown["short_url"]
    entry = AuditLog.objects.get(action="short_link.create")
    assert entry.after and entry.after["target_url"] == shown["target_url"]
    assert Preview.objects.get(pk=shown["short_link_preview_id"]).consumed_at is not None


def test_a_preview_makes_one_link(marketing: Any) -> None:
    pid = preview(marketing)["short_link_preview_id"]
    first = create(marketing, pid, "link-key-0001")
    assert create(marketing, pid, "link-key-0001") == first  # an idempotent retry
    with pytest.raises(ApplicationError) as err:
        create(marketing, pid, "link-key-0002")
    assert err.value.code == ErrorCode.PREVIEW_ALREADY_USED
    assert ShortLink.objects.count() == 1


@pytest.mark.parametrize(
    ("forge", "code"),
    [
        (lambda user, other: str(uuid.uuid4()), ErrorCode.PREVIEW_NOT_FOUND),
        (lambda user, other: "not-a-preview-id", ErrorCode.VALIDATION_ERROR),
        (lambda user, other: preview(other)["short_link_preview_id"], ErrorCode.PREVIEW_NOT_FOUND),
        (
            lambda user, other: str(
                preview_store(actor=actor(user), kind="segments", payload={}, result={"code": "x"}).pk
            ),
            ErrorCode.PREVIEW_KIND_MISMATCH,
        ),
        (
            lambda user, other: str(
                preview_store(actor=actor(user), kind="short_links", payload={}, result={}, ttl_seconds=-1).pk
            ),
            ErrorCode.PREVIEW_EXPIRED,
        ),
    ],
    ids=["random", "malformed", "other-users", "other-kind", "expired"],
)
def test_forged_or_foreign_preview_ids_are_refused(marketing: Any, make_user: Any, forge: Any, code: str) -> None:
    other = make_user("marketing")
    with pytest.raises(ApplicationError) as err:
        create(marketing, forge(marketing, other))
    assert err.value.code == code and err.value.field == "short_link_preview_id"
    assert not ShortLink.objects.exists()


def test_create_rechecks_the_current_policy(marketing: Any, technical: Any) -> None:
    pid = preview(marketing)["short_link_preview_id"]
    config_change(technical, short_links={"deny_domains": ["shop.example.hk"]})
    with pytest.raises(ApplicationError) as err:
        create(marketing, pid)
    assert err.value.code == "url_domain_denied"
    assert Preview.objects.get(pk=pid).consumed_at is None  # rolled back with the refusal


def test_create_refuses_a_link_that_would_differ_from_the_preview(marketing: Any, technical: Any) -> None:
    pid = preview(marketing)["short_link_preview_id"]
    config_change(technical, short_links={"domain": "go.example.hk"})
    with pytest.raises(ApplicationError) as err:
        create(marketing, pid)
    assert err.value.code == "short_link_preview_outdated" and err.value.details["changed"] == "short_domain"


def test_needs_permission(nobody: Any, marketing: Any) -> None:
    pid = preview(marketing)["short_link_preview_id"]
    with pytest.raises(ApplicationError) as err:
        create(nobody, pid)
    assert err.value.code == ErrorCode.PERMISSION_DENIED


# --- approval for sensitive landing pages -----------------------------------------------------


def test_sensitive_link_is_held_then_created_on_approval(marketing: Any, approver: Any, link_policy: Any) -> None:
    shown = preview(marketing, "https://shop.example.hk/payment/confirm")
    held = create(marketing, shown["short_link_preview_id"], "held-key-0001")
    assert held["status"] == "pending_approval"
    request = ActionRequest.objects.get(pk=held["action_request_id"])
    assert request.facts["sensitive"] is True and shown["target_url"] in request.summary
    assert not ShortLink.objects.exists()
    # The preview is claimed by this request: no second request can use it ...
    with pytest.raises(ApplicationError) as err:
        create(marketing, shown["short_link_preview_id"], "held-key-0002")
    assert err.value.code == ErrorCode.PREVIEW_ALREADY_USED
    # ... and approval works after the preview's own life ended.
    Preview.objects.filter(pk=shown["short_link_preview_id"]).update(expires_at=timezone.now() - timedelta(hours=1))
    done = action_request_approve(actor=actor(approver, Channel.ADMIN), action_request_id=request.pk)
    assert done["state"] == RequestState.EXECUTED
    link = ShortLink.objects.get()
    assert link.sensitive and link.action_request_id == request.pk and link.owner == marketing
    assert link.target_url == shown["target_url"]


def test_ordinary_link_is_not_held(marketing: Any, link_policy: Any) -> None:
    assert create(marketing, preview(marketing)["short_link_preview_id"])["status"] == "executed"


def test_approval_rechecks_the_landing_page(marketing: Any, approver: Any, technical: Any, link_policy: Any) -> None:
    pid = preview(marketing, "https://shop.example.hk/pay")["short_link_preview_id"]
    request_id = create(marketing, pid)["action_request_id"]
    config_change(technical, short_links={"deny_domains": ["shop.example.hk"]})
    outcome = action_request_approve(actor=actor(approver), action_request_id=request_id)
    assert outcome["state"] == RequestState.FAILED and outcome["error"]["code"] == "url_domain_denied"
    assert not ShortLink.objects.exists()


# --- races (PostgreSQL) ---------------------------------------------------------------------


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_race_two_creates_from_one_preview(marketing: Any) -> None:
    pid = preview(marketing)["short_link_preview_id"]
    results = race(3, lambda i: create(marketing, pid, f"race-link-{i:04d}"))
    created = [r for r in results if isinstance(r, dict)]
    refusals = [r for r in results if isinstance(r, ApplicationError)]
    assert len(created) == 1 and len(refusals) == 2, results
    assert {r.code for r in refusals} == {ErrorCode.PREVIEW_ALREADY_USED}
    assert ShortLink.objects.count() == 1


def test_key_helper_makes_valid_keys() -> None:
    assert len(key()) >= 8
