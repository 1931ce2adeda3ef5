"""Audiences, customer facts, the criteria language, segments.preview and segments.create."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from compliance.models import ActionRequest, ActionType, ApprovalPolicy, Condition
from compliance.roles import Role
from contacts.criteria import criteria_normalise
from contacts.models import Audience, AudienceMembership, Contact, CustomerFact, Segment
from contacts.optouts import opt_out_record
from contacts.selectors import audiences_list
from contacts.services import customer_facts_ingest, segment_create, segment_preview
from gateways.models import Gateway, GatewayRate, MessagePurpose, OutboundMessage, Provider
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.errors import ApplicationError, ErrorCode
from smsplatform.models import Preview
from tests.support.contacts import api_actor, create_contact, key

pytestmark = pytest.mark.django_db


@pytest.fixture
def crm(make_user: Any) -> Any:
    return make_user(Role.CRM, username="crm1")


@pytest.fixture
def world(crm: Any) -> dict[str, Any]:
    """Seven contacts in audiences A and B, one per exclusion reason, plus one hidden in C."""
    gateway = Gateway.objects.create(code="seg-gw", name="seg", provider=Provider.SIMULATOR, countries=["HK"])
    GatewayRate.objects.create(gateway=gateway, country="HK", price_per_segment=Decimal("0.30"), currency="HKD")
    a = Audience.objects.create(name="A", source="crm", region="HK")
    b = Audience.objects.create(name="B", source="import")
    c = Audience.objects.create(name="C", source="crm")
    c.visible_to.add(Group.objects.get(name=Role.COMPLIANCE))
    ids = {}
    spec = {
        "sendable": ("+85291000001", True),
        "opted_out": ("+85291000002", True),
        "no_consent": ("+85291000003", False),
        "invalid": ("+85291000004", True),
        "blocked": ("+85291000005", True),
        "country_not_covered": ("+6591234567", True),
        "frequency_capped": ("+85291000007", True),
        "hidden": ("+85291000008", True),
    }
    for name, (phone, with_consent) in spec.items():
        ids[name] = create_contact(crm, phone=phone, with_consent=with_consent, tags=[name, "all"])
        AudienceMembership.objects.create(audience=c if name == "hidden" else a, contact_id=ids[name])
    AudienceMembership.objects.create(audience=b, contact_id=ids["sendable"])  # duplicate phone across lists
    system = Actor.system("test")
    opt_out_record(actor=system, phone="+85291000002", reason="stop", source="sms")
    opt_out_record(actor=system, phone="+85291000004", reason="stop", source="sms")
    opt_out_record(actor=system, phone="+85291000004", reason="invalid", source="gateway")
    opt_out_record(actor=system, phone="+85291000005", reason="blocked", source="ops")
    OutboundMessage.objects.create(
        gateway=gateway,
        sender_id="#SHOPHK",
        destination="+85291000007",
        country="HK",
        body="hi",
        encoding="GSM-7",
        segments=1,
        purpose=MessagePurpose.MARKETING,
        quota_reference="q",
        created_at=timezone.now() - timedelta(hours=2),
    )
    return {"a": a, "b": b, "c": c, "ids": ids, "gateway": gateway}


def test_preview_numbers_add_up_one_primary_reason_each(world: dict[str, Any], marketing: Any) -> None:
    preview = segment_preview(actor=api_actor(marketing), criteria={"audiences": [world["a"].pk, world["b"].pk]})
    assert preview["matched"] == 8 and preview["distinct_phones"] == 7 and preview["sendable"] == 1
    assert preview["exclusions"] == {
        "duplicate_phone": 1,
        "invalid": 1,  # also opted out by STOP: counted once, under its first reason
        "blocked": 1,
        "opted_out": 1,
        "no_consent": 1,
        "country_not_covered": 1,
        "frequency_capped": 1,
    }
    assert preview["matched"] == preview["sendable"] + sum(preview["exclusions"].values())
    assert preview["frequency_capped_by_window"]["per_day"]["count"] == 1
    hk = next(c for c in preview["by_country"] if c["country"] == "HK")
    assert hk["sendable"] == 1 and hk["estimated_cost"] == "0.30" and hk["covered"] is True
    sg = next(c for c in preview["by_country"] if c["country"] == "SG")
    assert sg["covered"] is False and "estimated_cost" not in sg
    assert preview["estimated_cost"] == {"HKD": "0.30"}
    stored = Preview.objects.get(pk=preview["segment_preview_id"])
    assert stored.kind == "segments" and stored.result["sendable"] == 1
    assert "+852" not in str(preview)  # counts only, no phone numbers


def test_a_capped_phone_keeps_the_earlier_reason_it_also_has(world: dict[str, Any], marketing: Any, crm: Any) -> None:
    """Sent to today (capped) and also opted out, without consent or uncovered: each is counted
    under that earlier reason, never as frequency capped (the preview looks the phone-keyed
    reasons up once in their union, then reason by reason for the phones found there)."""
    spec = {"+85291000011": ("stop", True), "+85291000012": (None, False), "+6591000013": (None, True)}
    for phone, (opt_out, with_consent) in spec.items():
        contact_id = create_contact(crm, phone=phone, with_consent=with_consent, tags=["capped_too"])
        AudienceMembership.objects.create(audience=world["a"], contact_id=contact_id)
        if opt_out:
            opt_out_record(actor=Actor.system("test"), phone=phone, reason=opt_out, source="sms")
        OutboundMessage.objects.create(
            gateway=world["gateway"],
            sender_id="#SHOPHK",
            destination=phone,
            country="HK" if phone.startswith("+852") else "SG",
            body="hi",
            encoding="GSM-7",
            segments=1,
            purpose=MessagePurpose.MARKETING,
            quota_reference="q",
            created_at=timezone.now() - timedelta(hours=1),
        )
    preview = segment_preview(actor=api_actor(marketing), criteria={"tags": {"any": ["capped_too"]}})
    assert preview["matched"] == 3 and preview["sendable"] == 0
    assert {reason: n for reason, n in preview["exclusions"].items() if n} == {
        "opted_out": 1,
        "no_consent": 1,
        "country_not_covered": 1,
    }
    assert preview["frequency_capped_by_window"]["per_day"]["count"] == 0


def test_preview_scope_defaults_to_visible_audiences_and_hidden_ones_are_refused(
    world: dict[str, Any], marketing: Any, make_user: Any
) -> None:
    everything = segment_preview(actor=api_actor(marketing), criteria={"tags": {"any": ["all"]}})
    assert everything["distinct_phones"] == 7  # C is not visible to marketing
    with pytest.raises(ApplicationError) as err:
        segment_preview(actor=api_actor(marketing), criteria={"audiences": [world["c"].pk]})
    assert err.value.code == ErrorCode.NOT_FOUND and err.value.field == "criteria.audiences"
    officer = make_user(Role.COMPLIANCE)
    assert segment_preview(actor=api_actor(officer), criteria={"tags": {"any": ["all"]}})["distinct_phones"] == 8


def test_audiences_list_counts_and_visibility(world: dict[str, Any], marketing: Any, make_user: Any) -> None:
    listed = audiences_list(actor=api_actor(marketing))
    by_name = {a["name"]: a for a in listed["audiences"]}
    assert set(by_name) == {"A", "B"}
    assert by_name["A"]["members"] == 7 and by_name["A"]["consent"]["without_consent"] == 1
    assert by_name["A"]["consent"]["opted_out"] == 3
    assert by_name["A"]["sendable"] == 3  # consent and no opt-out (coverage and caps are preview matters)
    assert "+852" not in str(listed)
    assert {a["name"] for a in audiences_list(actor=api_actor(make_user(Role.COMPLIANCE)))["audiences"]} == {
        "A",
        "B",
        "C",
    }


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        ({"tags": {"any": ["sendable", "blocked"]}}, {"sendable", "blocked"}),
        ({"tags": {"all": ["sendable", "all"]}}, {"sendable"}),
        ({"all": [{"tags": {"any": ["all"]}}, {"tags": {"none": ["sendable", "blocked"]}}]}, None),
        ({"country": ["SG"]}, {"country_not_covered"}),
        ({"any": [{"country": ["SG"]}, {"tags": {"any": ["invalid"]}}]}, {"country_not_covered", "invalid"}),
        ({"all": [{"country": ["HK"]}, {"tags": {"any": ["invalid", "country_not_covered"]}}]}, {"invalid"}),
        ({"language": ["en"]}, set()),
        ({"consent_purpose": "marketing"}, None),
    ],
)
def test_criteria(world: dict[str, Any], crm: Any, criteria: dict[str, Any], expected: set[str] | None) -> None:
    from contacts.criteria import criteria_q

    names = {v: k for k, v in world["ids"].items()}
    found = {
        names[pk]
        for pk in Contact.objects.filter(criteria_q(criteria_normalise(criteria))).values_list("pk", flat=True)
    }
    if expected is None:
        if "consent_purpose" in criteria:
            assert found == set(world["ids"]) - {"no_consent"}
        else:
            assert found == set(world["ids"]) - {"sendable", "blocked"}
    else:
        assert found == expected


def test_fact_criteria(world: dict[str, Any], technical: Any) -> None:
    from contacts.criteria import criteria_q

    ids = world["ids"]
    now = timezone.now()
    customer_facts_ingest(
        actor=api_actor(technical),
        idempotency_key=key("facts"),
        facts=[
            {
                "contact_id": ids["sendable"],
                "kind": "order",
                "external_id": "o1",
                "status": "paid",
                "occurred_at": (now - timedelta(days=45)).isoformat(),
                "offer_code": "SPRING10",
            },
            {
                "phone": "+85291000002",
                "kind": "order",
                "external_id": "o2",
                "status": "paid",
                "occurred_at": (now - timedelta(days=5)).isoformat(),
            },
            {
                "contact_id": ids["no_consent"],
                "kind": "order",
                "external_id": "o3",
                "status": "cancelled",
                "occurred_at": (now - timedelta(days=45)).isoformat(),
            },
            {
                "contact_id": ids["blocked"],
                "kind": "pickup",
                "external_id": "p1",
                "status": "ready",
                "occurred_at": now.isoformat(),
            },
            {
                "contact_id": ids["invalid"],
                "kind": "payment",
                "external_id": "pay1",
                "status": "failed",
                "occurred_at": now.isoformat(),
            },
            {
                "contact_id": ids["frequency_capped"],
                "kind": "repurchase",
                "external_id": "r1",
                "occurred_at": now.isoformat(),
                "due_at": (now + timedelta(days=3)).isoformat(),
            },
            {
                "contact_id": ids["hidden"],
                "kind": "appointment",
                "external_id": "ap1",
                "occurred_at": now.isoformat(),
                "due_at": (now + timedelta(days=30)).isoformat(),
            },
        ],
    )
    names = {v: k for k, v in ids.items()}

    def match(criteria: dict[str, Any]) -> set[str]:
        q = criteria_q(criteria_normalise(criteria))
        return {names[pk] for pk in Contact.objects.filter(q).values_list("pk", flat=True)}

    assert match({"order_status": ["paid"]}) == {"sendable", "opted_out"}
    assert match({"days_since_last_purchase": {"min": 30}}) == {"sendable"}  # cancelled is not a purchase
    assert match({"days_since_last_purchase": {"max": 10}}) == {"opted_out"}
    assert match({"days_since_last_purchase": {"min": 30, "max": 60}}) == {"sendable"}
    assert match({"offer": ["SPRING10"]}) == {"sendable"}
    assert match({"pickup": ["ready"]}) == {"blocked"}
    assert match({"payment_status": ["failed"]}) == {"invalid"}
    assert match({"repurchase_due_within_days": 7}) == {"frequency_capped"}
    assert match({"appointment_within_days": 7}) == set()
    assert match({"any": [{"pickup": ["ready"]}, {"offer": ["SPRING10"]}]}) == {"blocked", "sendable"}


@pytest.mark.parametrize(
    ("criteria", "field"),
    [
        ({}, "criteria"),
        ({"all": []}, "criteria.all"),
        ({"bogus": 1}, "criteria.bogus"),
        ({"all": [{"tags": {"some": ["x"]}}]}, "criteria.all.0.tags"),
        ({"any": [{"country": ["HKG"]}]}, "criteria.any.0.country"),
        ({"days_since_last_purchase": {"min": 90, "max": 30}}, "criteria.days_since_last_purchase"),
        ({"language": [""]}, "criteria.language.0"),
        ({"consent_purpose": "spam"}, "criteria.consent_purpose"),
    ],
)
def test_bad_criteria_name_the_field(criteria: Any, field: str) -> None:
    with pytest.raises(ApplicationError) as err:
        criteria_normalise(criteria)
    assert err.value.field == field


def test_create_takes_only_the_preview_and_never_widens(world: dict[str, Any], marketing: Any, crm: Any) -> None:
    narrow = {"tags": {"any": ["sendable"]}}
    preview = segment_preview(actor=api_actor(marketing), criteria=narrow)
    created = segment_create(
        actor=api_actor(marketing), segment_preview_id=preview["segment_preview_id"], name="VIP", idempotency_key=key()
    )
    assert created["status"] == "executed"
    segment = Segment.objects.get()
    assert segment.criteria["criteria"] == criteria_normalise(narrow) and segment.sendable_count == 1
    # The answer shows the criteria as segments.preview did: flat, no criteria.criteria.
    result = created["result"]
    assert result["criteria"] == preview["criteria"] == criteria_normalise(narrow)
    assert result["audience_ids"] == preview["audience_ids"] and "criteria" not in result["criteria"]
    with pytest.raises(ApplicationError) as reused:
        segment_create(
            actor=api_actor(marketing),
            segment_preview_id=preview["segment_preview_id"],
            name="x",
            idempotency_key=key(),
        )
    assert reused.value.code == ErrorCode.PREVIEW_ALREADY_USED
    other = segment_preview(actor=api_actor(crm), criteria={"tags": {"any": ["all"]}})
    with pytest.raises(ApplicationError) as foreign:
        segment_create(
            actor=api_actor(marketing), segment_preview_id=other["segment_preview_id"], name="x", idempotency_key=key()
        )
    assert foreign.value.code == ErrorCode.PREVIEW_NOT_FOUND and foreign.value.field == "segment_preview_id"
    stale = segment_preview(actor=api_actor(marketing), criteria=narrow)
    Preview.objects.filter(pk=stale["segment_preview_id"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(ApplicationError) as expired:
        segment_create(
            actor=api_actor(marketing), segment_preview_id=stale["segment_preview_id"], name="x", idempotency_key=key()
        )
    assert expired.value.code == ErrorCode.PREVIEW_EXPIRED
    assert Segment.objects.count() == 1


def test_large_segments_follow_the_approval_policy(world: dict[str, Any], marketing: Any, approver: Any) -> None:
    from compliance.services import action_request_approve

    ApprovalPolicy.objects.create(
        action=ActionType.SEGMENT_CREATE,
        condition=Condition.RECIPIENTS_OVER,
        threshold_count=0,
        approver_role=Group.objects.get(name=Role.APPROVER),
    )
    preview = segment_preview(actor=api_actor(marketing), criteria={"tags": {"any": ["all"]}})
    held = segment_create(
        actor=api_actor(marketing), segment_preview_id=preview["segment_preview_id"], name="All", idempotency_key=key()
    )
    assert held["status"] == "pending_approval"
    request = ActionRequest.objects.get(pk=held["action_request_id"])
    assert request.facts["recipients"] == preview["sendable"] == 1 and request.facts["cost"] == "0.30"
    assert not Segment.objects.exists()
    # Approval after the preview's expiry still executes the frozen preview.
    Preview.objects.filter(pk=preview["segment_preview_id"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    outcome = action_request_approve(actor=api_actor(approver), action_request_id=request.pk)
    assert Segment.objects.get().name == "All", outcome
    # Consumed once, by the write, through the kernel's preview_consume.
    used = Preview.objects.get(pk=preview["segment_preview_id"])
    assert used.consumed_at is not None and used.consumed_by == "sms_marketing.segments.create"


def test_fact_ingest_is_all_or_nothing_with_row_errors(world: dict[str, Any], technical: Any, marketing: Any) -> None:
    now = timezone.now().isoformat()
    good = {
        "contact_id": world["ids"]["sendable"],
        "kind": "order",
        "external_id": "o1",
        "status": "paid",
        "occurred_at": now,
    }
    with pytest.raises(ApplicationError) as err:
        customer_facts_ingest(
            actor=api_actor(technical),
            idempotency_key=key(),
            facts=[
                good,
                {"phone": "123", "kind": "order", "external_id": "o2", "occurred_at": now},
                {"contact_id": 999999, "kind": "order", "external_id": "o3", "occurred_at": now},
                {**good, "kind": "nope"},
            ],
        )
    rows = err.value.details["errors"]
    assert [r["row"] for r in rows] == [1, 2, 3] and rows[0]["field"] == "facts.1.phone"
    assert not CustomerFact.objects.exists()
    assert customer_facts_ingest(actor=api_actor(technical), idempotency_key=key(), facts=[good])["ingested"] == 1
    # Re-ingesting the same (kind, external_id) updates it.
    customer_facts_ingest(actor=api_actor(technical), idempotency_key=key(), facts=[{**good, "status": "refunded"}])
    assert CustomerFact.objects.get().status == "refunded"
    with pytest.raises(ApplicationError) as denied:
        customer_facts_ingest(actor=api_actor(marketing), idempotency_key=key(), facts=[good])
    assert denied.value.code == ErrorCode.PERMISSION_DENIED


def test_a_create_retried_after_its_preview_was_used_gets_its_first_result(
    world: dict[str, Any], marketing: Any
) -> None:
    preview = segment_preview(actor=api_actor(marketing), criteria={"tags": {"any": ["sendable"]}})
    call = {
        "actor": api_actor(marketing),
        "segment_preview_id": preview["segment_preview_id"],
        "name": "VIP",
        "idempotency_key": key(),
    }
    created = segment_create(**call)
    assert segment_create(**call) == created  # not preview_already_used
    assert Segment.objects.count() == 1
    with pytest.raises(ApplicationError) as other:
        segment_create(**{**call, "name": "Other"})
    assert other.value.code == ErrorCode.IDEMPOTENCY_KEY_REUSED
