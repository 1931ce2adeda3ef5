"""contacts.upsert gives a contact audience membership (issue 13 item 5): a contact made by the
tool can enter a segment. ``audiences`` (ids or names, add and remove) is validated, audited,
re-checked at approval, and works over MCP, REST and the admin's contact actions."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from compliance.models import ActionType, ApprovalPolicy, Condition
from compliance.roles import Role
from compliance.services import action_request_approve
from contacts.models import Audience, AudienceMembership, Contact
from contacts.services import segment_preview
from smsplatform.kernel.actor import Actor, Channel
from smsplatform.mcp.server import run_tool
from smsplatform.models import AuditLog
from tests.support.contacts import consent, key, upsert
from tests.support.mcp import tool_answer

pytestmark = pytest.mark.django_db


@pytest.fixture
def crm(make_user: Any) -> Any:
    return make_user(Role.CRM, username="crm1")


@pytest.fixture
def vip(db: Any) -> Audience:
    return Audience.objects.create(name="VIP", source="crm", region="HK")


def _mcp(user: Any, name: str, args: dict[str, Any]) -> dict[str, Any]:
    result = run_tool(f"sms_marketing.{name}", args, SimpleNamespace(user=user, auth=None))
    return tool_answer(result)


def test_an_upserted_contact_joins_an_audience_by_name_and_enters_its_segment(
    crm: Any, vip: Audience, marketing: Any
) -> None:
    answer = _mcp(
        crm,
        "contacts.upsert",
        {
            "phone": "+85291230001",
            "source": "crm",
            "consent": consent(),
            "audiences": ["VIP"],
            "idempotency_key": key(),
        },
    )
    assert answer["status"] == "executed", answer
    result = answer["result"]
    assert result["audience_ids"] == [vip.pk] and result["audiences_added"] == [vip.pk]
    entry = AuditLog.objects.get(action="contact.create", object_id=str(result["contact_id"]))
    assert entry.after is not None and entry.after["audiences_added"] == [vip.pk]
    preview = segment_preview(actor=Actor(user=marketing, channel=Channel.MCP), criteria={"audiences": [vip.pk]})
    assert preview["matched"] == 1  # in the segment (sendable also needs a gateway rate for HK)


def test_bad_audiences_are_refused_naming_the_entry_and_nothing_is_written(
    crm: Any, vip: Audience, make_user: Any
) -> None:
    hidden = Audience.objects.create(name="Board", source="crm")
    hidden.visible_to.set([Group.objects.get(name=Role.COMPLIANCE)])
    cases = [
        (["VIP", "Nope"], "not_found", "audiences.add[1]"),
        ([hidden.pk], "not_found", "audiences.add[0]"),
        ({"add": [vip.pk], "remove": ["VIP"]}, "validation_error", "audiences"),
        ({"join": [vip.pk]}, "validation_error", "audiences"),
        ([True], "validation_error", "audiences.add[0]"),
    ]
    for audiences, code, field in cases:
        with pytest.raises(Exception) as err:
            upsert(crm, phone="+85291230002", consent=consent(), audiences=audiences)
        assert (getattr(err.value, "code", None), getattr(err.value, "field", None)) == (code, field), audiences
    # MCP refuses a malformed value by its schema; a well-formed unknown name by the service.
    answer = _mcp(
        crm,
        "contacts.upsert",
        {"phone": "+85291230002", "source": "crm", "audiences": ["Nope"], "idempotency_key": key()},
    )
    assert answer["error"]["code"] == "not_found" and answer["error"]["field"] == "audiences.add[0]"
    assert not Contact.objects.filter(phone="+85291230002").exists()


def test_rest_adds_then_removes_and_a_retry_adds_once(crm: Any, vip: Audience, api_for: Any) -> None:
    api = api_for(crm)
    body = {"phone": "+85291230003", "source": "crm", "audiences": {"add": [vip.pk]}, "idempotency_key": key()}
    first = api.post("/api/v1/contacts/", body, format="json")
    assert first.status_code == 200, first.json()
    again = api.post("/api/v1/contacts/", body, format="json")
    assert again.json() == first.json()
    contact_id = first.json()["result"]["contact_id"]
    assert AudienceMembership.objects.filter(contact_id=contact_id).count() == 1
    removed = api.post(
        "/api/v1/contacts/",
        {
            "contact_id": contact_id,
            "base_version_token": first.json()["result"]["base_version_token"],
            "source": "crm",
            "audiences": {"remove": ["VIP"]},
            "idempotency_key": key(),
        },
        format="json",
    )
    assert removed.status_code == 200, removed.json()
    assert removed.json()["result"]["audiences_removed"] == [vip.pk] and removed.json()["result"]["audience_ids"] == []
    refused = api.post(
        "/api/v1/contacts/", {**body, "audiences": ["Nope"], "idempotency_key": key()}, format="json"
    ).json()
    assert refused["error"]["field"] == "audiences.add[0]"


def test_a_held_upsert_joins_the_audience_when_approved_and_not_if_it_was_deleted(
    crm: Any, vip: Audience, approver: Any
) -> None:
    ApprovalPolicy.objects.create(
        action=ActionType.CONTACTS_IMPORT,
        condition=Condition.SENSITIVE_CONTENT,
        approver_role=Group.objects.get(name=Role.APPROVER),
    )
    held = upsert(crm, phone="+85291230004", consent=consent(), audiences=[vip.pk])
    assert held["status"] == "pending_approval", held
    decider = Actor(user=approver, channel=Channel.ADMIN)
    action_request_approve(actor=decider, action_request_id=held["action_request_id"])
    contact = Contact.objects.get(phone="+85291230004")
    assert AudienceMembership.objects.filter(contact=contact, audience=vip).exists()

    gone = Audience.objects.create(name="Gone", source="crm")
    held = upsert(crm, phone="+85291230005", consent=consent(), audiences=["Gone"])
    gone.delete()
    decided = action_request_approve(actor=decider, action_request_id=held["action_request_id"])
    assert decided["state"] == "failed" and decided["error"]["field"] == "audiences"
    assert not Contact.objects.filter(phone="+85291230005").exists()


def test_admin_contact_actions_add_and_remove_members(crm: Any, vip: Audience) -> None:
    contact_id = upsert(crm, phone="+85291230006", consent=consent())["result"]["contact_id"]
    client = Client()
    client.force_login(crm)
    url = reverse("admin:contacts_contact_changelist")
    page = client.get(url)
    assert f"audience_add_{vip.pk}" in page.content.decode()
    client.post(url, {"action": f"audience_add_{vip.pk}", "_selected_action": [contact_id]}, follow=True)
    assert AudienceMembership.objects.filter(contact_id=contact_id, audience=vip).exists()
    assert AuditLog.objects.filter(action="contact.audiences", object_id=str(contact_id)).count() == 1
    client.post(url, {"action": f"audience_remove_{vip.pk}", "_selected_action": [contact_id]}, follow=True)
    assert not AudienceMembership.objects.filter(contact_id=contact_id).exists()
    assert AuditLog.objects.filter(action="contact.audiences", object_id=str(contact_id)).count() == 2
