"""Admin: templates saved through the governed service, versions read-only, short links read-only."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from compliance.models import ActionRequest
from templates.models import LinkClick, ShortLink, Template, TemplateVersion, VersionApproval
from tests.support.templates import MARKETING, make_link, save

pytestmark = pytest.mark.django_db


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def form_data(client: Client, url: str, **changes: Any) -> dict[str, Any]:
    """What a browser posts: the form's current values, the inlines' management forms, the changes."""
    page = client.get(url)
    form = page.context["adminform"].form
    data = {name: form[name].value() if form[name].value() is not None else "" for name in form.fields}
    for inline in page.context["inline_admin_formsets"]:
        management = inline.formset.management_form
        data.update({management.add_prefix(name): management[name].value() for name in management.fields})
        for sub in inline.formset.forms:
            data[sub.add_prefix("id")] = sub.instance.pk
            data[sub.add_prefix("template")] = sub.instance.template_id
    data.update(changes)
    return data


def add_data(client: Client, **changes: Any) -> dict[str, Any]:
    base = {
        "name": MARKETING["name"],
        "purpose": MARKETING["purpose"],
        "language": MARKETING["language"],
        "brand": MARKETING["brand"],
        "body": MARKETING["body"],
        "dynamic_fields": json.dumps(MARKETING["fields"], ensure_ascii=False),
        "max_segments": 3,
        "reason": "admin",
    }
    return form_data(client, reverse("admin:sms_templates_template_add"), **{**base, **changes})


def test_add_through_the_service(compliance: Any) -> None:
    client = logged_in(compliance)
    response = client.post(reverse("admin:sms_templates_template_add"), add_data(client))
    assert response.status_code == 302
    version = TemplateVersion.objects.get()
    assert version.created_by == compliance and version.approval_status == VersionApproval.NOT_REQUIRED
    assert version.fields[0]["name"] == "first_name"


def test_missing_wording_shows_on_the_body_field(compliance: Any) -> None:
    client = logged_in(compliance)
    data = add_data(client, body="【ShopHK】{{first_name}} spring sale! Reply STOP to opt out")
    response = client.post(reverse("admin:sms_templates_template_add"), data)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "Chinese unsubscribe statement" in str(errors["body"])
    assert not Template.objects.exists()


def test_change_saves_a_new_version_and_shows_history(marketing: Any, compliance: Any) -> None:
    saved = save(marketing)["result"]
    client = logged_in(compliance)
    url = reverse("admin:sms_templates_template_change", args=[saved["template_id"]])
    page = client.get(url)
    assert page.status_code == 200 and page.context["adminform"].form["body"].value() == MARKETING["body"]
    response = client.post(url, form_data(client, url, max_segments=2, reason="shorter"))
    assert response.status_code == 302
    assert list(TemplateVersion.objects.values_list("version", "max_segments")) == [(2, 2), (1, 3)]
    html = client.get(url).content.decode()
    assert "not_required" in html or "Saved directly" in html


def test_change_with_a_stale_form_is_refused(marketing: Any, compliance: Any) -> None:
    saved = save(marketing)["result"]
    client = logged_in(compliance)
    url = reverse("admin:sms_templates_template_change", args=[saved["template_id"]])
    stale = form_data(client, url, max_segments=2)
    client.post(url, form_data(client, url, max_segments=4))
    response = client.post(url, stale)
    assert response.status_code == 200 and "changed since you read it" in response.content.decode()
    assert Template.objects.get().version == 2


def test_held_for_approval_from_the_admin(compliance: Any, template_policy: Any) -> None:
    client = logged_in(compliance)
    response = client.post(reverse("admin:sms_templates_template_add"), add_data(client), follow=True)
    assert response.status_code == 200 and "Held for approval" in response.content.decode()
    request = ActionRequest.objects.get()
    assert request.channel == "admin" and request.payload["content"]["name"] == MARKETING["name"]
    assert not Template.objects.exists()


def test_marketing_cannot_change_in_the_admin(marketing: Any) -> None:
    saved = save(marketing)["result"]
    url = reverse("admin:sms_templates_template_change", args=[saved["template_id"]])
    client = logged_in(marketing)
    assert client.post(url, {"max_segments": 2}).status_code == 403
    assert Template.objects.get().version == 1
    assert client.post(reverse("admin:sms_templates_template_delete", args=[saved["template_id"]])).status_code == 403


def test_short_links_are_read_only_with_click_counts(marketing: Any) -> None:
    link = make_link(marketing, per_recipient=True)
    client = logged_in(marketing)
    client.get(f"/s/{link['code']}/rcpt0001", HTTP_USER_AGENT="Mozilla/5.0 (iPhone) Mobile")
    client.get(f"/s/{link['code']}/rcpt0001", HTTP_USER_AGENT="Mozilla/5.0 (iPhone) Mobile")
    assert LinkClick.objects.count() == 2
    page = client.get(reverse("admin:sms_templates_shortlink_changelist"))
    assert page.status_code == 200
    row = page.context["cl"].result_list[0]
    assert (row._clicks, row._unique) == (2, 1)
    assert link["code"] in page.content.decode()
    pk = ShortLink.objects.get().pk
    assert client.get(reverse("admin:sms_templates_shortlink_change", args=[pk])).status_code == 200
    assert (
        client.post(reverse("admin:sms_templates_shortlink_change", args=[pk]), {"target_url": "x"}).status_code == 403
    )
    assert client.get(reverse("admin:sms_templates_shortlink_add")).status_code == 403
    assert ShortLink.objects.get().target_url == link["target_url"]
