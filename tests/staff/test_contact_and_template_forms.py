"""The contacts and templates pages through the staff forms (Django's test client; SQLite and
PostgreSQL): masked search, consent evidence, upsert with a stale token, opt-out at once, the CSV
import's per-row errors, the template editor's versions and diff."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from compliance.models import OptOut
from compliance.roles import Role
from contacts.models import Contact
from templates.models import Template
from tests.support.campaigns import PHONES, key

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]

LINK_FIELD = '[{"name": "link", "type": "url", "max_length": 40, "example": "https://s.example.hk/s/abc"}]'
CONSENT_CSV_HEAD = "phone,name,consent_wording,consent_source,consent_obtained_at,consent_proof_reference\n"


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_search_masks_phones_and_needs_a_criterion(world: dict[str, Any], marketer: Any) -> None:
    client = logged_in(marketer)
    html = client.get("/app/contacts/", {"tag": "member"}).content.decode()
    assert 'id="contacts"' in html
    assert PHONES["a"] not in html and "+852****0001" in html
    # A search by a full phone finds the contact, still masked in the answer.
    html = client.get("/app/contacts/", {"phone": PHONES["a"]}).content.decode()
    results = html.split('id="results"', 1)[1]
    assert "+852****0001" in results and PHONES["a"] not in results
    # An htmx search answers with the results only.
    part = client.get("/app/contacts/", {"tag": "member"}, headers={"HX-Request": "true"}).content.decode()
    assert "<html" not in part and 'id="contacts"' in part


def test_detail_shows_consent_evidence_to_crm_and_withholds_it_from_marketing(
    world: dict[str, Any], marketer: Any, crm: Any
) -> None:
    contact_id = world["contacts"]["a"]
    crm_html = logged_in(crm).get(f"/app/contacts/{contact_id}/").content.decode()
    assert "form-submission-991" in crm_html
    marketing_html = logged_in(marketer).get(f"/app/contacts/{contact_id}/").content.decode()
    assert "form-submission-991" not in marketing_html


def test_opt_out_through_the_form_takes_effect_at_once(world: dict[str, Any], crm: Any) -> None:
    contact_id = world["contacts"]["a"]
    client = logged_in(crm)
    detail = client.get(f"/app/contacts/{contact_id}/").content.decode()
    opt_key = re.search(r'name="key" value="([^"]+)"', detail).group(1)  # type: ignore[union-attr]
    response = client.post(f"/app/contacts/{contact_id}/opt-out/", {"key": opt_key, "reason": "stop", "note": ""})
    assert response.status_code == 200, response.content.decode()[:2000]
    assert OptOut.objects.filter(contact_id=contact_id).exists()
    after = client.get(f"/app/contacts/{contact_id}/").content.decode()
    assert 'id="opt-out"' not in after  # no second opt-out button; the contact reads opted out


def test_upsert_with_a_stale_token_is_refused(world: dict[str, Any], crm: Any) -> None:
    contact_id = world["contacts"]["b"]
    client = logged_in(crm)
    page = client.get(f"/app/contacts/{contact_id}/edit/").content.decode()
    token = re.search(r'name="token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    first = client.post(f"/app/contacts/{contact_id}/edit/", {"key": key("u"), "token": token, "name": "陳大文"})
    assert first.status_code == 200, first.content.decode()[:2000]
    assert Contact.objects.get(pk=contact_id).name == "陳大文"
    stale = client.post(f"/app/contacts/{contact_id}/edit/", {"key": key("u"), "token": token, "name": "Other"})
    assert stale.status_code == 400
    assert Contact.objects.get(pk=contact_id).name == "陳大文"


def test_a_new_contact_needs_a_valid_phone_next_to_its_field(crm: Any) -> None:
    response = logged_in(crm).post("/app/contacts/new/", {"key": key("u"), "phone": "12", "name": "x"})
    assert response.status_code == 400
    block = re.search(r'<label for="id_phone">.*?</p>', response.content.decode(), re.S)
    assert block is not None and "field-error" in block.group(0)


def test_csv_import_lists_every_bad_row_and_imports_nothing(world: dict[str, Any], crm: Any) -> None:
    before = Contact.objects.count()
    csv = (
        CONSENT_CSV_HEAD
        + "+85261234001,Ann,I agree,web,2026-01-05T10:00:00+08:00,proof-1\n"
        + "not-a-phone,Bob,I agree,web,2026-01-05T10:00:00+08:00,proof-2\n"
        + "+85261234003,Cat,,web,2026-01-05T10:00:00+08:00,proof-3\n"
    )
    upload = SimpleUploadedFile("contacts.csv", csv.encode(), content_type="text/csv")
    response = logged_in(crm).post(
        "/app/contacts/import/", {"key": key("imp"), "source": "fair", "file": upload}, headers={"HX-Request": "true"}
    )
    html = response.content.decode()
    assert response.status_code == 400
    assert 'id="row-errors"' in html and "<td>3</td>" in html and "<td>4</td>" in html
    assert Contact.objects.count() == before
    good = SimpleUploadedFile(
        "contacts.csv",
        (CONSENT_CSV_HEAD + "+85261234001,Ann,I agree,web,2026-01-05T10:00:00+08:00,proof-1\n").encode(),
        content_type="text/csv",
    )
    response = logged_in(crm).post("/app/contacts/import/", {"key": key("imp"), "source": "fair", "file": good})
    assert response.status_code == 200, re.findall(r"id=\"import-result\".{0,1500}", response.content.decode(), re.S)
    assert Contact.objects.filter(phone="+85261234001").exists()


def test_marketing_cannot_import_or_edit_contacts(world: dict[str, Any], make_user: Any) -> None:
    operations = make_user(Role.OPERATIONS, username="ops-staff")
    assert logged_in(operations).get("/app/contacts/import/").status_code == 403


def test_template_editor_saves_versions_and_shows_a_diff(marketer: Any, make_user: Any) -> None:
    client = logged_in(marketer)
    page = client.get("/app/templates/new/").content.decode()
    form_key = re.search(r'name="key" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    body = "【ShopHK】新品到店 {{link}} 回覆STOP退訂 Reply STOP to opt out"
    data = {
        "key": form_key,
        "name": "New arrivals",
        "purpose": "marketing",
        "language": "bilingual",
        "brand": "ShopHK",
        "max_segments": "3",
        "body": body,
        "reason": "first",
        "fields": LINK_FIELD,
    }
    response = client.post("/app/templates/new/", data)
    assert response.status_code == 200, re.findall(r"role=\"alert\".{0,500}", response.content.decode(), re.S)
    template = Template.objects.get(name="New arrivals")
    edit = client.get(f"/app/templates/{template.pk}/").content.decode()
    token = re.search(r'name="token" value="([^"]+)"', edit).group(1)  # type: ignore[union-attr]
    new_body = body.replace("新品到店", "新品到店，全場9折")
    data2 = {**data, "key": key("tpl"), "token": token, "body": new_body, "reason": "discount"}
    # Marketing creates templates but may not change one: the service refuses, the page says so.
    refused = client.post(f"/app/templates/{template.pk}/", data2)
    assert refused.status_code == 400 and "permission_denied" in refused.content.decode()
    client = logged_in(make_user(Role.COMPLIANCE, username="compliance-staff"))
    second = client.post(f"/app/templates/{template.pk}/", data2)
    assert second.status_code == 200, re.findall(r'role="alert".{0,400}', second.content.decode(), re.S)
    # The old token is stale now: refused next to the body.
    stale = client.post(f"/app/templates/{template.pk}/", {**data2, "key": key("tpl"), "body": body})
    assert stale.status_code == 400
    diff = client.get(f"/app/templates/{template.pk}/diff/", {"from": 1, "to": 2}).content.decode()
    assert 'class="del">- ' in diff and 'class="add">+ ' in diff and "全場9折" in diff
    fit = client.post("/app/templates/fit/", {"body": new_body, "purpose": "marketing", "brand": "ShopHK"})
    assert 'data-encoding="UCS-2"' in fit.content.decode()


def test_template_body_without_required_wording_is_refused_next_to_the_body(marketer: Any) -> None:
    client = logged_in(marketer)
    data = {
        "key": key("tpl"),
        "name": "Bare",
        "purpose": "marketing",
        "language": "bilingual",
        "brand": "ShopHK",
        "max_segments": "3",
        "body": "Sale now on",
        "reason": "",
    }
    response = client.post("/app/templates/new/", data)
    assert response.status_code == 400
    block = re.search(r'<label for="id_body">.*?</p>', response.content.decode(), re.S)
    assert block is not None and "field-error" in block.group(0), response.content.decode()[:3000]
    assert not Template.objects.filter(name="Bare").exists()
