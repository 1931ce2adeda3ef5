"""Contact, segment and audience names refuse bidi overrides and zero-width characters on every
path: service, REST, CSV import, admin (issue 14, item 7)."""

from __future__ import annotations

from typing import Any

import pytest

from compliance.roles import Role
from contacts.imports import contacts_import
from contacts.models import Audience, Contact, Segment
from contacts.services import segment_create, segment_preview
from smsplatform.kernel.errors import ApplicationError
from tests.support.contacts import api_actor, consent, key, upsert

pytestmark = pytest.mark.django_db
RLO = "\u202e"


@pytest.mark.parametrize(("field", "value"), [("name", f"Chan{RLO}gnp.exe"), ("crm_key", "crm\u200b-1")])
def test_upsert_refuses_hidden_characters(make_user: Any, field: str, value: str) -> None:
    with pytest.raises(ApplicationError) as err:
        upsert(make_user(Role.CRM), phone="+85291234567", consent=consent(), **{field: value})
    assert (err.value.code, err.value.field) == ("control_character", field)
    assert not Contact.objects.exists()


def test_rest_names_the_field(api_for: Any, make_user: Any) -> None:
    body = {"phone": "+85291234567", "source": "crm", "name": f"A{RLO}B", "idempotency_key": "rest-rlo-01"}
    response = api_for(make_user(Role.CRM)).post("/api/v1/contacts/", body, format="json")
    assert response.status_code == 400 and response.json()["error"]["field"] == "name"


def test_csv_import_reports_the_row_and_column(make_user: Any) -> None:
    csv_text = f"phone,name\n+85291234567,Good\n+85291234568,Bad{RLO}name\n"
    with pytest.raises(ApplicationError) as err:
        contacts_import(
            actor=api_actor(make_user(Role.CRM)),
            csv_text=csv_text,
            source="pos",
            consent=consent(),
            idempotency_key=key("imp"),
        )
    assert "line 3" in str(err.value.details) or "'line': 3" in str(err.value.details), err.value.details
    assert "'field': 'name'" in str(err.value.details)
    assert not Contact.objects.exists()


def test_segment_name(make_user: Any, marketing: Any) -> None:
    upsert(make_user(Role.CRM), phone="+85291234567", consent=consent(), tags=["vip"])
    preview = segment_preview(actor=api_actor(marketing), criteria={"tags": {"any": ["vip"]}})
    with pytest.raises(ApplicationError) as err:
        segment_create(
            actor=api_actor(marketing),
            segment_preview_id=preview["segment_preview_id"],
            name=f"VIP{RLO}",
            idempotency_key=key(),
        )
    assert (err.value.code, err.value.field) == ("control_character", "name")
    assert not Segment.objects.exists()


def test_audience_admin_form(client: Any, admin_user: Any) -> None:
    client.force_login(admin_user)
    response = client.post("/admin/contacts/audience/add/", {"name": f"Members{RLO}", "source": "crm"})
    assert response.status_code == 200 and "U+202E" in response.content.decode()
    assert not Audience.objects.exists()
