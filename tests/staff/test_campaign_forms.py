"""The campaign pages through the staff forms (Django's test client; SQLite and PostgreSQL): each
safety rule tried through the form, refused by the same service as on MCP and REST, with the
error next to the field it names."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from campaigns.dispatch import batches_advance
from campaigns.models import Campaign, CampaignState
from campaigns.selectors import cost_preview
from campaigns.services import campaign_send_approved
from compliance.models import ActionRequest, RequestState
from compliance.roles import Role
from gateways.models import OutboundMessage
from smsplatform.models import AuditLog
from tests.campaigns.test_admin import draft
from tests.support.campaigns import HK_QUIET_HOURS, PHONES, TEXT, act, key, set_quiet_hours

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def compose_data(world: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {
        "key": key("form"),
        "name": "Spring sale",
        "pick": f"segment:{world['segment_id']}",
        "text": TEXT,
        "brand": "ShopHK",
        "short_link_id": str(world["short_link_id"]),
        "sender_id": "#SHOPHK",
        "send_mode": "send",
        "time_zone": "Asia/Hong_Kong",
        "reason": "Spring sale",
        **overrides,
    }


def field_errors(html: str, field: str) -> list[str]:
    """The error messages rendered inside the field's own block (its label ... its errors)."""
    block = re.search(rf'<label for="id_{field}">.*?</p>', html, re.S)
    assert block is not None, f"no field {field}"
    return re.findall(r'class="error field-error" role="alert" data-code="([^"]+)"', block.group(0))


def test_login_is_required_and_the_pages_need_their_permission(world: dict[str, Any], make_user: Any) -> None:
    response = Client().get("/app/campaigns/new/")
    assert response.status_code == 302 and response["Location"].startswith("/app/login/")
    technical = make_user(Role.TECHNICAL, username="tech-staff")
    response = logged_in(technical).get("/app/campaigns/new/")
    assert response.status_code == 403
    assert b"campaigns.add_campaign" in response.content
    # The fragments refuse too (they call services that check again).
    response = logged_in(technical).post("/app/campaigns/new/segment/", {"pick": f"segment:{world['segment_id']}"})
    assert response.status_code == 403
    # The navigation offers only what the user may open.
    home = logged_in(technical).get("/app/").content.decode()
    assert "/app/campaigns/new/" not in home


def test_a_live_send_is_never_unreviewed_from_the_form(world: dict[str, Any], marketer: Any, send_policy: Any) -> None:
    """A marketer's send is held for approval; a confirm posted by hand is not a field of the form."""
    response = logged_in(marketer).post("/app/campaigns/new/", compose_data(world, confirm="true"))
    assert response.status_code == 200, response.content.decode()[:2000]
    html = response.content.decode()
    assert 'data-step="send" data-status="pending_approval"' in html
    request = ActionRequest.objects.get()
    assert request.state == RequestState.PENDING and request.requested_by_id == marketer.pk
    assert Campaign.objects.get().state == CampaignState.PENDING_APPROVAL
    assert not OutboundMessage.objects.exists()
    # Recorded as a form write by the marketer.
    assert AuditLog.objects.filter(user=marketer, channel="form").exists()


def test_submitting_twice_writes_once(world: dict[str, Any], marketer: Any, send_policy: Any) -> None:
    client = logged_in(marketer)
    data = compose_data(world)
    first = client.post("/app/campaigns/new/", data)
    second = client.post("/app/campaigns/new/", data)
    assert first.status_code == second.status_code == 200
    assert Campaign.objects.count() == 1 and ActionRequest.objects.count() == 1


def test_an_unusable_sender_id_is_refused_next_to_its_field(world: dict[str, Any], marketer: Any) -> None:
    response = logged_in(marketer).post("/app/campaigns/new/", compose_data(world, sender_id="#NOPE"))
    assert response.status_code == 400
    assert field_errors(response.content.decode(), "sender_id"), response.content.decode()[:3000]
    assert not Campaign.objects.exists()


def test_a_link_placeholder_without_a_short_link_is_refused(world: dict[str, Any], marketer: Any) -> None:
    response = logged_in(marketer).post("/app/campaigns/new/", compose_data(world, short_link_id=""))
    assert response.status_code == 400
    assert "short_link_required" in response.content.decode()
    assert not Campaign.objects.exists()


def test_copy_without_the_unsubscribe_wording_is_refused_next_to_the_copy(world: dict[str, Any], marketer: Any) -> None:
    response = logged_in(marketer).post(
        "/app/campaigns/new/", compose_data(world, text="【ShopHK】春季優惠全場8折 {{link}}")
    )
    assert response.status_code == 400
    assert field_errors(response.content.decode(), "text"), response.content.decode()[:3000]
    assert not Campaign.objects.exists()


def test_the_segment_preview_excludes_the_opted_out_contact(world: dict[str, Any], marketer: Any) -> None:
    html = (
        logged_in(marketer)
        .post("/app/campaigns/new/segment/", {"pick": f"audience:{world['audience'].pk}"})
        .content.decode()
    )
    assert 'id="segment-sendable">4<' in html
    assert re.search(r'data-reason="opted_out"><td>opted_out</td><td>1<', html)
    assert PHONES["stopped"] not in html and "91000004" not in html  # counts only, no phone numbers


def test_an_audience_pick_saves_the_previewed_segment_and_never_widens_it(
    world: dict[str, Any], marketer: Any, send_policy: Any
) -> None:
    client = logged_in(marketer)
    html = client.post("/app/campaigns/new/segment/", {"pick": f"audience:{world['audience'].pk}"}).content.decode()
    preview_id = re.search(r'name="segment_preview_id" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
    data = compose_data(world, pick=f"audience:{world['audience'].pk}", segment_preview_id=preview_id)
    data["segment_name"] = "Members again"
    response = client.post("/app/campaigns/new/", data)
    assert response.status_code == 200, response.content.decode()[:3000]
    campaign = Campaign.objects.get()
    assert campaign.segment.name == "Members again" and campaign.segment.sendable_count == 4
    # A made-up preview id is refused next to the audience pick.
    bad = compose_data(world, pick=f"audience:{world['audience'].pk}", segment_preview_id="not-a-preview")
    response = client.post("/app/campaigns/new/", bad)
    assert response.status_code == 400
    assert field_errors(response.content.decode(), "pick")


def test_the_counter_shows_ucs2_the_reason_and_the_parts(world: dict[str, Any], marketer: Any) -> None:
    client = logged_in(marketer)
    gsm = client.post("/app/campaigns/new/fit/", {"text": "Hello there, spring sale"}).content.decode()
    assert 'data-encoding="GSM-7"' in gsm
    long_zh = "春" * 71 + "🌸"
    html = client.post("/app/campaigns/new/fit/", {"text": long_zh, "sendable": "4", "country": "HK"}).content.decode()
    assert 'data-encoding="UCS-2"' in html and 'data-segments="2"' in html
    assert "🌸" in re.search(r'id="fit-ucs2-reasons".*?</p>', html, re.S).group(0)  # type: ignore[union-attr]
    assert 'id="fit-cost-HK">' in html


def test_quiet_hours_are_warned_for_a_schedule_at_night(world: dict[str, Any], marketer: Any) -> None:
    set_quiet_hours(HK_QUIET_HOURS)
    night = (timezone.now() + timedelta(days=1)).astimezone(timezone.get_fixed_timezone(480))
    at = night.replace(hour=23, minute=30).strftime("%Y-%m-%dT%H:%M")
    html = (
        logged_in(marketer)
        .post(
            "/app/campaigns/new/schedule/",
            {"send_mode": "schedule", "send_at": at, "time_zone": "Asia/Hong_Kong", "country": "HK"},
        )
        .content.decode()
    )
    assert "quiet-hours" in html and "21:00-09:00" in html


def test_over_budget_send_is_refused_and_shown(world: dict[str, Any], marketer: Any, send_policy: Any) -> None:
    response = logged_in(marketer).post("/app/campaigns/new/", compose_data(world, budget="0.50"))
    html = response.content.decode()
    assert response.status_code == 400
    assert "budget" in html
    assert not ActionRequest.objects.exists()


def test_campaign_pages_mask_phones_and_show_progress(
    world: dict[str, Any], marketer: Any, approver_user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    created = draft(world, marketer)
    with django_capture_on_commit_callbacks(execute=True):
        out = campaign_send_approved(
            actor=act(approver_user),
            campaign_id=created["campaign_id"],
            base_version_token=created["base_version_token"],
            confirm=True,
            idempotency_key=key("staff"),
        )
    assert out["status"] == "executed", out
    batches_advance(budget_seconds=5)
    batches_advance(budget_seconds=5)
    client = logged_in(marketer)
    listing = client.get("/app/campaigns/").content.decode()
    assert "Spring sale" in listing and 'class="bar"' in listing
    detail = client.get(f"/app/campaigns/{created['campaign_id']}/").content.decode()
    assert 'hx-get="/app/campaigns/' in detail  # batches and failures arrive as their own fragment
    assert " HKD" in detail and "{&#x27;" not in detail  # the estimate as money, not a dict
    batches = client.get(f"/app/campaigns/{created['campaign_id']}/batches/").content.decode()
    assert 'id="batches"' in batches and 'id="failures"' in batches
    assert PHONES["undelivered"] not in batches and "+852****2001" in batches
    progress = client.get(f"/app/campaigns/{created['campaign_id']}/progress/").content.decode()
    assert 'data-state="delivered"' in progress
    assert "hx-trigger" not in progress  # final: the bar stops polling
    assert PHONES["a"] not in detail


def test_retry_preview_then_resend_takes_only_the_preview(
    world: dict[str, Any], marketer: Any, approver_user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    created = draft(world, marketer)
    with django_capture_on_commit_callbacks(execute=True):
        campaign_send_approved(
            actor=act(approver_user),
            campaign_id=created["campaign_id"],
            base_version_token=created["base_version_token"],
            confirm=True,
            idempotency_key=key("staff"),
        )
    batches_advance(budget_seconds=5)
    batches_advance(budget_seconds=5)
    client = logged_in(marketer)
    page = client.get(f"/app/campaigns/{created['campaign_id']}/retry/").content.decode()
    assert 'id="retry-eligible"' in page
    # A resend with a made-up preview id is refused; nothing is resent.
    response = client.post(f"/app/campaigns/{created['campaign_id']}/retry/", {"retry_preview_id": "nope", "key": "k"})
    assert response.status_code == 400
    assert OutboundMessage.objects.filter(batch__campaign_id=created["campaign_id"]).count() == 4


def test_the_language_switch_shows_traditional_chinese(world: dict[str, Any], marketer: Any) -> None:
    client = logged_in(marketer)
    assert "New campaign" in client.get("/app/").content.decode()
    response = client.post("/app/language/", {"language": "zh-hant", "next": "/app/campaigns/new/"})
    assert response.status_code == 302 and response["Location"] == "/app/campaigns/new/"
    html = client.get("/app/campaigns/new/").content.decode()
    assert 'lang="zh-Hant"' in html and "新推廣活動" in html and "分群或受眾" in html
    fit = client.post("/app/campaigns/new/fit/", {"text": "春季優惠 🌸"}).content.decode()
    assert "因以下字元而使用 UCS-2" in fit
    assert "預覽費用" in html


def test_the_cost_preview_is_shown_before_the_submit_and_writes_nothing(
    world: dict[str, Any], marketer: Any, make_user: Any
) -> None:
    """The composer's cost preview is sms_marketing.cost_preview's figures for the draft as the form
    stands: the same total the created draft's cost_preview then gives."""
    client = logged_in(marketer)
    assert 'id="cost-preview-button"' in client.get("/app/campaigns/new/").content.decode()
    data = compose_data(world, budget="500")
    response = client.post("/app/campaigns/new/cost/", data)
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html
    assert 'id="cost-by-country"' in html and 'data-country="HK"' in html and 'id="cost-link-effect"' in html
    assert not Campaign.objects.exists() and not ActionRequest.objects.exists()
    # A refusal is shown as the service gives it, naming its field.
    bad = client.post("/app/campaigns/new/cost/", compose_data(world, sender_id="#NOPE")).content.decode()
    assert 'data-field="sender_id"' in bad
    created = client.post("/app/campaigns/new/", {**data, "send_mode": "draft"})
    assert created.status_code == 200, created.content.decode()[:3000]
    preview = cost_preview(actor=act(marketer), campaign_id=Campaign.objects.get().pk)
    total = " + ".join(f"{amount} {currency}" for currency, amount in preview["estimated_cost"].items())
    assert f'id="cost-total">{total}<' in html
    assert f"{preview['sendable']} sendable" in html
    # An audience waits for its segment.
    audience = client.post("/app/campaigns/new/cost/", compose_data(world, pick=f"audience:{world['audience'].pk}"))
    assert "becomes a segment" in audience.content.decode()
    technical = logged_in(make_user(Role.TECHNICAL, username="tech-cost"))
    assert technical.post("/app/campaigns/new/cost/", data).status_code == 403


def test_the_failures_list_pages_by_keyset(
    world: dict[str, Any],
    marketer: Any,
    approver_user: Any,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from campaigns.staff import pages

    created = draft(world, marketer)
    with django_capture_on_commit_callbacks(execute=True):
        campaign_send_approved(
            actor=act(approver_user),
            campaign_id=created["campaign_id"],
            base_version_token=created["base_version_token"],
            confirm=True,
            idempotency_key=key("staff"),
        )
    messages = OutboundMessage.objects.filter(batch__campaign_id=created["campaign_id"])
    messages.update(state="failed", error_code="undelivered")
    ids = sorted(messages.values_list("pk", flat=True), reverse=True)
    monkeypatch.setattr(pages, "FAILURES_PAGE", 3)
    client = logged_in(marketer)
    url = f"/app/campaigns/{created['campaign_id']}/batches/"
    first = client.get(url).content.decode()
    assert first.count("<tr><td>+852") == 3 and f"?before_id={ids[2]}" in first
    rest = client.get(url, {"before_id": ids[2]}).content.decode()
    assert rest.count("<tr><td>+852") == 1 and "older-failures" not in rest and "Newest failures" in rest
    assert client.get(url, {"before_id": "x"}).status_code == 200  # not a number: the first page


def test_the_batches_list_pages_by_number(
    world: dict[str, Any],
    marketer: Any,
    approver_user: Any,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from campaigns.models import SendBatch
    from campaigns.staff import pages

    created = draft(world, marketer, batch_size=1, batch_interval_seconds=0)
    with django_capture_on_commit_callbacks(execute=True):
        campaign_send_approved(
            actor=act(approver_user),
            campaign_id=created["campaign_id"],
            base_version_token=created["base_version_token"],
            confirm=True,
            idempotency_key=key("staff"),
        )
    numbers = list(SendBatch.objects.filter(campaign_id=created["campaign_id"]).values_list("number", flat=True))
    assert len(numbers) > 1
    monkeypatch.setattr(pages, "BATCHES_PAGE", 1)
    client = logged_in(marketer)
    url = f"/app/campaigns/{created['campaign_id']}/batches/"
    pages_seen = []
    after: dict[str, Any] = {}
    while True:
        html = client.get(url, after).content.decode()
        rows = re.findall(r"<tbody><tr><td>(\d+)", html)
        pages_seen.append(rows)
        more = re.search(r'id="more-batches" href="[^"]*\?after_number=(\d+)"', html)
        if not more:
            break
        after = {"after_number": more.group(1)}
    assert [n for page in pages_seen for n in page] == [str(n) for n in sorted(numbers)]
