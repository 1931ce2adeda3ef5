"""contacts.upsert / get / search services: each safety note tried and held."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from compliance.models import ActionRequest, ActionType, ApprovalPolicy, Condition, OptOut
from compliance.roles import Role
from contacts.models import ConsentEvidence, Contact
from contacts.optouts import contact_opt_out
from contacts.selectors import contact_get, contacts_search
from smsplatform.kernel.errors import ApplicationError, ErrorCode
from smsplatform.models import AuditLog
from tests.support.contacts import api_actor, consent, create_contact, key, upsert

pytestmark = pytest.mark.django_db


@pytest.fixture
def crm(make_user: Any) -> Any:
    return make_user(Role.CRM, username="crm1")


def test_phone_is_parsed_to_e164_and_local_numbers_default_to_hong_kong(crm: Any) -> None:
    cid = create_contact(crm, phone="9123 4567")
    contact = Contact.objects.get(pk=cid)
    assert (contact.phone, contact.country) == ("+85291234567", "HK")


@pytest.mark.parametrize("raw", ["12345", "not a phone", "+852 1234"])
def test_invalid_numbers_are_refused_with_the_reason(crm: Any, raw: str) -> None:
    with pytest.raises(ApplicationError) as err:
        upsert(crm, phone=raw)
    assert err.value.code == "phone_invalid" and err.value.field == "phone"
    assert raw in err.value.message
    assert not Contact.objects.exists()


def test_duplicates_are_one_phone_and_updates_need_the_version_token(crm: Any) -> None:
    cid = create_contact(crm, phone="+85291234567")
    with pytest.raises(ApplicationError) as err:
        upsert(crm, phone="91234567", tags=["vip"])
    assert err.value.code == ErrorCode.VERSION_TOKEN_REQUIRED and err.value.details["contact_id"] == cid
    token = contact_get(actor=api_actor(crm), contact_id=cid)["base_version_token"]
    result = upsert(crm, contact_id=cid, base_version_token=token, tags=["vip", "vip", "hk"])
    assert result["result"]["version"] == 2
    assert Contact.objects.count() == 1 and Contact.objects.get().tags == ["hk", "vip"]
    with pytest.raises(ApplicationError) as stale:
        upsert(crm, contact_id=cid, base_version_token=token, tags=["x"])
    assert stale.value.code == ErrorCode.STALE_VERSION_TOKEN
    assert stale.value.details["current_version_token"] == result["result"]["base_version_token"]


def test_a_contact_without_consent_evidence_is_never_sendable(crm: Any) -> None:
    result = upsert(crm, phone="+85261234567")["result"]
    assert result["sendable"] is False and result["has_consent"] is False
    got = contact_get(actor=api_actor(crm), contact_id=result["contact_id"])
    assert got["sendable"] is False and got["consent_evidence"] == []


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"wording": ""}, "consent.wording"),
        ({"proof_reference": " "}, "consent.proof_reference"),
        ({"source": ""}, "consent.source"),
        ({"obtained_at": "2026-01-05 10:00"}, "consent.obtained_at"),
        ({"obtained_at": "2999-01-01T00:00:00+00:00"}, "consent.obtained_at"),
        ({"purpose": "anything"}, "consent.purpose"),
    ],
)
def test_consent_evidence_must_be_complete(crm: Any, override: dict[str, Any], field: str) -> None:
    with pytest.raises(ApplicationError) as err:
        upsert(crm, phone="+85261234567", consent=consent(**override))
    assert err.value.field == field
    assert not Contact.objects.exists() and not ConsentEvidence.objects.exists()


def test_source_and_time_are_kept(crm: Any) -> None:
    with pytest.raises(ApplicationError) as err:
        upsert(crm, phone="+85261234567", source="")
    assert err.value.field == "source"
    cid = create_contact(crm, phone="+85261234567", source="pos:causeway-bay")
    contact = Contact.objects.get(pk=cid)
    evidence = ConsentEvidence.objects.get(contact=contact)
    assert contact.source == "pos:causeway-bay" and contact.created_at
    assert evidence.source == "web_form" and evidence.recorded_at and evidence.recorded_by == crm
    assert evidence.actor_channel == "api" and evidence.proof_reference == "form-submission-991"
    audit = AuditLog.objects.get(action="contact.create")
    assert audit.user == crm and "9123" not in str(audit.after)  # masked in the log


def test_consent_evidence_is_never_deleted(crm: Any) -> None:
    cid = create_contact(crm)
    with pytest.raises(PermissionError):
        ConsentEvidence.objects.get(contact_id=cid).delete()
    with pytest.raises(Exception):  # noqa: B017 - PROTECT: the contact cannot take its evidence with it
        Contact.objects.get(pk=cid).delete()


def test_crm_key_is_unique(crm: Any) -> None:
    create_contact(crm, phone="+85291234567", crm_key="C-1")
    with pytest.raises(ApplicationError) as err:
        upsert(crm, phone="+85261234567", crm_key="C-1")
    assert err.value.field == "crm_key"


def test_the_phone_of_a_contact_cannot_change(crm: Any) -> None:
    cid = create_contact(crm, phone="+85291234567")
    token = contact_get(actor=api_actor(crm), contact_id=cid)["base_version_token"]
    with pytest.raises(ApplicationError) as err:
        upsert(crm, contact_id=cid, phone="+85261234567", base_version_token=token)
    assert err.value.field == "phone"


def test_upsert_needs_permission(marketing: Any) -> None:
    with pytest.raises(ApplicationError) as err:
        upsert(marketing, phone="+85291234567", consent=consent())
    assert err.value.code == ErrorCode.PERMISSION_DENIED
    assert not Contact.objects.exists()


def test_consent_changes_follow_the_approval_policy(crm: Any, approver: Any) -> None:
    ApprovalPolicy.objects.create(
        action=ActionType.CONTACTS_IMPORT,
        condition=Condition.SENSITIVE_CONTENT,
        approver_role=Group.objects.get(name=Role.APPROVER),
    )
    plain = upsert(crm, phone="+85291234567")
    assert plain["status"] == "executed"
    held = upsert(crm, phone="+85261234567", consent=consent())
    assert held["status"] == "pending_approval"
    request = ActionRequest.objects.get(pk=held["action_request_id"])
    assert request.facts["consent_change"] is True and not Contact.objects.filter(phone="+85261234567").exists()


def test_idempotent_retry_returns_the_first_result(crm: Any) -> None:
    k = key("same")
    first = upsert(crm, phone="+85291234567", consent=consent(), idempotency_key=k)
    again = upsert(crm, phone="+85291234567", consent=consent(), idempotency_key=k)
    assert first == again and ConsentEvidence.objects.count() == 1
    with pytest.raises(ApplicationError) as err:
        upsert(crm, phone="+85261234567", idempotency_key=k)
    assert err.value.code == ErrorCode.IDEMPOTENCY_KEY_REUSED


# --- search and get: minimal, masked by permission --------------------------------------------


def test_search_is_minimal_and_masks_phones_without_the_permission(crm: Any, marketing: Any) -> None:
    cid = create_contact(crm, phone="+85291234567", name="Chan Tai Man", tags=["vip"], crm_key="C-9")
    masked = contacts_search(actor=api_actor(marketing), phone="91234567")
    assert masked["phones_masked"] is True
    [row] = masked["contacts"]
    assert row["contact_id"] == cid and row["phone"] == "+852****4567" and row["sendable"] is True
    assert set(row) == {"contact_id", "phone", "country", "language", "has_consent", "opted_out", "sendable"}
    full = contacts_search(actor=api_actor(crm), phone="+85291234567")
    assert full["contacts"][0]["phone"] == "+85291234567" and full["phones_masked"] is False
    assert contact_get(actor=api_actor(marketing), contact_id=cid)["phone"] == "+852****4567"


def test_search_needs_a_criterion_and_permission(crm: Any, technical: Any) -> None:
    with pytest.raises(ApplicationError) as err:
        contacts_search(actor=api_actor(crm))
    assert err.value.code == ErrorCode.VALIDATION_ERROR
    with pytest.raises(ApplicationError) as denied:
        contacts_search(actor=api_actor(technical), phone="+85291234567")
    assert denied.value.code == ErrorCode.PERMISSION_DENIED


def test_search_filters(crm: Any) -> None:
    a = create_contact(crm, phone="+85291234567", tags=["vip"], crm_key="C-1")
    b = create_contact(crm, phone="+85261234567", with_consent=False)
    contact_opt_out(actor=api_actor(crm), idempotency_key=key(), contact_id=a)
    ids = lambda **kw: [c["contact_id"] for c in contacts_search(actor=api_actor(crm), **kw)["contacts"]]  # noqa: E731
    assert ids(tag="vip") == [a]
    assert ids(crm_key="C-1") == [a]
    assert ids(opted_out=True) == [a]
    assert ids(has_consent=False) == [b]
    assert ids(sent_within_days=7) == []


def test_get_returns_consent_opt_outs_history_and_token(crm: Any) -> None:
    cid = create_contact(crm)
    contact_opt_out(actor=api_actor(crm), idempotency_key=key(), contact_id=cid, reason="web")
    got = contact_get(actor=api_actor(crm), contact_id=cid)
    assert got["opted_out"] is True and got["sendable"] is False
    assert got["opt_outs"][0]["reason"] == "web" and got["consent_evidence"][0]["wording"]
    assert got["version"] == 2 and got["base_version_token"].startswith("2.")
    with pytest.raises(ApplicationError) as err:
        contact_get(actor=api_actor(crm), contact_id=999999)
    assert err.value.code == ErrorCode.NOT_FOUND and err.value.field == "contact_id"
    assert OptOut.objects.count() == 1


def test_search_by_phone_alone_gives_the_same_flags_as_the_general_search(crm: Any) -> None:
    """The phone-only search is one hand-written statement; it must agree with the annotated
    queryset every other search uses, for every combination of consent and opt-out."""
    from contacts.selectors import contacts_annotated

    lifted = create_contact(crm, phone="+85298765432")
    cases = {
        "+85291234567": create_contact(crm, phone="+85291234567"),
        "+85261234567": create_contact(crm, phone="+85261234567", with_consent=False),
        "+85298765432": lifted,
    }
    contact_opt_out(actor=api_actor(crm), idempotency_key=key(), phone="+85291234567")
    contact_opt_out(actor=api_actor(crm), idempotency_key=key(), phone="+85298765432")
    OptOut.objects.filter(phone="+85298765432").update(lifted_at=timezone.now())
    for phone, cid in cases.items():
        [row] = contacts_search(actor=api_actor(crm), phone=phone)["contacts"]
        general: Any = contacts_annotated().get(pk=cid)
        assert (row["contact_id"], row["has_consent"], row["opted_out"]) == (
            cid,
            general.has_consent,
            general.opted_out,
        ), phone
    assert contacts_search(actor=api_actor(crm), phone="+85251234567")["count"] == 0
