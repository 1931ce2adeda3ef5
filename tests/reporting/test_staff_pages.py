"""The reporting pages of the staff app through Django's test client (SQLite and PostgreSQL): a
campaign's report with its inline SVG chart and link clicks, the attribution with its rules, another
owner's campaign refused to a marketer without view-all, and the inbox: one's own items, mark read."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client

from reporting.models import InboxItem
from reporting.notifications import review_notification_send
from smsplatform.kernel.actor import Actor, Channel
from tests.reporting import builders as b
from tests.reporting.conftest import key

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _reported(owner: Any) -> Any:
    c = b.campaign(owner=owner)
    batch = b.batch(c)
    people = [b.contact() for _ in range(3)]
    for i, person in enumerate(people):
        b.message(batch, person, at=b.T0 + timedelta(hours=i))
    b.click(c, people[0], at=b.T0 + timedelta(hours=1), unique=True)
    b.click(c, people[1], at=b.T0 + timedelta(hours=2), unique=True)
    b.click(c, None, at=b.T0 + timedelta(hours=2), device="bot")
    b.settle()
    return c, people


def test_the_report_shows_figures_an_svg_chart_and_link_clicks(marketer: Any) -> None:
    c, people = _reported(marketer)
    response = logged_in(marketer).get(f"/app/reports/{c.pk}/")
    assert response.status_code == 200, response.content.decode()[:2000]
    html = response.content.decode()
    assert re.search(r'class="delivered">3<', html)
    chart = html.split('id="report-chart"', 1)[1].split("</div>", 1)[0]
    assert "<svg" in chart and "<polyline" in chart and "<script" not in html.split("</head>", 1)[1]
    totals = html.split('id="click-totals"', 1)[1].split("</dl>", 1)[0]
    assert "<dd>2</dd>" in totals  # two human clicks; the bot is counted apart
    assert "s.example.hk" in html.split('id="links"', 1)[1]
    assert all(p.phone not in html for p in people)
    # A bad date is refused next to its field.
    bad = logged_in(marketer).get(f"/app/reports/{c.pk}/", {"date_from": "yesterday"})
    assert bad.status_code == 400
    field = bad.content.decode().split('id="id_date_from"', 1)[1].split("</p>", 1)[0]
    assert 'data-code="validation_error"' in field


def test_the_attribution_page_states_its_rules(marketer: Any) -> None:
    c, _ = _reported(marketer)
    html = logged_in(marketer).get(f"/app/reports/{c.pk}/attribution/").content.decode()
    rules = html.split('id="attribution-rules"', 1)[1].split("</p>", 1)[0]
    assert "Last touch" in rules and "120 h" in rules
    assert 'id="conversions"' in html


def test_another_owners_campaign_is_refused_to_a_marketer_without_view_all(
    marketer: Any, make_user: Any, ops: Any
) -> None:
    from compliance.roles import Role

    other = make_user(Role.MARKETING, username="othermarketer")
    assert not other.has_perm("campaigns.view_all_campaigns")
    c, _ = _reported(marketer)
    client = logged_in(other)
    for url in (f"/app/reports/{c.pk}/", f"/app/reports/{c.pk}/attribution/"):
        response = client.get(url)
        assert response.status_code in (403, 404)
        assert "Spring" not in response.content.decode() and c.name not in response.content.decode()
    assert f"/app/reports/{c.pk}/" not in client.get("/app/reports/").content.decode()
    assert f"/app/reports/{c.pk}/" in logged_in(marketer).get("/app/reports/").content.decode()


def test_the_inbox_shows_only_ones_own_items_and_marks_them_read(
    ops: Any, owner: Any, crm: Any, campaign: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        review_notification_send(
            actor=Actor(user=ops, channel=Channel.API),
            idempotency_key=key(),
            kind="cost_anomaly",
            subject={"campaign_id": campaign.pk},
            title="Spring sale cost is above its estimate",
            body="Actual cost HKD 12,345.67 is 1.8x the estimate. Please review.",
        )
    owner_html = logged_in(owner).get("/app/inbox/").content.decode()
    assert "Spring sale cost is above its estimate" in owner_html and 'id="unread-count">1 unread' in owner_html
    assert "Spring sale cost" not in logged_in(crm).get("/app/inbox/").content.decode()
    ops_item = InboxItem.objects.get(user=ops)
    mine = InboxItem.objects.get(user=owner)
    # Another user's item is never marked through one's own form.
    client = logged_in(owner)
    assert client.post("/app/inbox/read/", {"item": [str(ops_item.pk)]}).status_code == 302
    ops_item.refresh_from_db()
    assert ops_item.read_at is None
    client.post("/app/inbox/read/", {"item": [str(mine.pk)]})
    mine.refresh_from_db()
    assert mine.read_at is not None
    after = client.get("/app/inbox/", {"unread": "1"}).content.decode()
    assert "Spring sale cost" not in after and 'id="unread-count">0 unread' in after
    assert Client().get("/app/inbox/").status_code == 302  # login first
