"""Opt-outs and suppression, frequency caps, and the STOP-vs-upsert race."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.utils import timezone

from compliance.models import ActionType, ApprovalPolicy, Condition, OptOut, OptOutReason
from compliance.optouts import opt_outs_list, phone_is_suppressed
from compliance.roles import Role
from contacts.models import ConsentEvidence, Contact
from contacts.optouts import contact_opt_out
from contacts.selectors import contact_get
from gateways.frequency import frequency_blocked_purpose, frequency_capped_destinations, frequency_caps_get
from gateways.models import Gateway, MessagePurpose, MessageState, OutboundMessage, Provider
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.errors import ApplicationError, ErrorCode
from smsplatform.models import AuditLog
from tests.support.contacts import api_actor, consent, create_contact, key, upsert
from tests.support.db import postgres_only


@pytest.fixture
def crm(make_user: Any) -> Any:
    return make_user(Role.CRM, username="crm1")


def _token(user: Any, cid: int) -> str:
    return str(contact_get(actor=api_actor(user), contact_id=cid)["base_version_token"])


def _opt_out(user: Any, **fields: Any) -> dict[str, Any]:
    """The opt-out's record, after checking the write envelope it came in."""
    answer = contact_opt_out(actor=api_actor(user), idempotency_key=fields.pop("idempotency_key", key("oo")), **fields)
    assert (answer["status"], answer["action"]) == ("executed", "contacts.opt_out"), answer
    return dict(answer["result"])


@pytest.mark.django_db
class TestOptOut:
    def test_effective_immediately_and_audited(self, crm: Any) -> None:
        cid = create_contact(crm)
        result = _opt_out(crm, contact_id=cid, message_text="please stop", language="en")
        assert result["suppressed"] is True and result["created"] is True
        assert phone_is_suppressed("+85291234567")
        assert contact_get(actor=api_actor(crm), contact_id=cid)["sendable"] is False
        audit: Any = AuditLog.objects.get(action="opt_out.record")
        assert audit.user == crm and audit.after["reason"] == "api" and audit.after["message_text"] == "please stop"

    def test_never_held_for_approval_even_under_an_always_policy(self, crm: Any) -> None:
        group = Group.objects.get(name=Role.APPROVER)
        for action in (ActionType.OPT_OUTS_UPDATE, ActionType.CONTACTS_IMPORT):
            ApprovalPolicy.objects.create(action=action, condition=Condition.ALWAYS, approver_role=group)
        result = _opt_out(crm, phone="+85261234567")
        assert result["suppressed"] is True and phone_is_suppressed("+85261234567")

    def test_unknown_and_unparsable_numbers_are_still_suppressed(self, crm: Any) -> None:
        _opt_out(crm, phone="6123 4567")
        _opt_out(crm, phone="12345", reason="invalid")
        assert phone_is_suppressed("+85261234567") and phone_is_suppressed("12345")

    def test_needs_exactly_one_target_and_permission(self, crm: Any, marketing: Any) -> None:
        with pytest.raises(ApplicationError) as err:
            _opt_out(crm)
        assert err.value.field == "contact_id"
        with pytest.raises(ApplicationError) as both:
            _opt_out(crm, contact_id=1, phone="+85291234567")
        assert both.value.field == "phone"
        with pytest.raises(ApplicationError) as denied:
            _opt_out(marketing, phone="+85291234567")
        assert denied.value.code == ErrorCode.PERMISSION_DENIED
        with pytest.raises(ApplicationError) as missing:
            _opt_out(crm, phone="+85291234567", idempotency_key=None)
        assert missing.value.field == "idempotency_key"

    def test_evidence_is_never_deleted(self, crm: Any) -> None:
        _opt_out(crm, phone="+85291234567")
        with pytest.raises(PermissionError):
            OptOut.objects.get().delete()

    def test_an_upsert_never_clears_an_opt_out(self, crm: Any) -> None:
        cid = create_contact(crm)
        _opt_out(crm, contact_id=cid)
        # Even with fresh consent evidence, without lift_opt_out the opt-out stays.
        result = upsert(
            crm,
            contact_id=cid,
            base_version_token=_token(crm, cid),
            tags=["vip"],
            consent=consent(obtained_at=timezone.now().isoformat()),
        )["result"]
        assert result["opted_out"] is True and result["sendable"] is False
        assert OptOut.objects.get().lifted_at is None

    def test_only_newer_explicit_consent_lifts_a_stop(self, crm: Any) -> None:
        cid = create_contact(crm)
        _opt_out(crm, contact_id=cid, reason="stop")
        with pytest.raises(ApplicationError) as no_consent:
            upsert(crm, contact_id=cid, base_version_token=_token(crm, cid), lift_opt_out=True)
        assert no_consent.value.field == "consent"
        with pytest.raises(ApplicationError) as older:
            upsert(crm, contact_id=cid, base_version_token=_token(crm, cid), lift_opt_out=True, consent=consent())
        assert older.value.field == "consent.obtained_at"
        lifted = upsert(
            crm,
            contact_id=cid,
            base_version_token=_token(crm, cid),
            lift_opt_out=True,
            consent=consent(obtained_at=timezone.now().isoformat(), proof_reference="call-recording-7"),
        )["result"]
        assert lifted["lifted_opt_outs"] == 1 and lifted["sendable"] is True
        opt_out = OptOut.objects.get()
        assert opt_out.lifted_at and opt_out.lifted_by_consent == ConsentEvidence.objects.get(pk=lifted["consent_id"])
        assert AuditLog.objects.filter(action="opt_out.lift").count() == 1

    def test_blocks_complaints_and_invalid_numbers_are_not_lifted_by_consent(self, crm: Any) -> None:
        cid = create_contact(crm)
        for reason in (OptOutReason.BLOCKED, OptOutReason.COMPLAINT, OptOutReason.INVALID):
            _opt_out(crm, contact_id=cid, reason=reason)
        result = upsert(
            crm,
            contact_id=cid,
            base_version_token=_token(crm, cid),
            lift_opt_out=True,
            consent=consent(obtained_at=timezone.now().isoformat()),
        )["result"]
        assert result["lifted_opt_outs"] == 0 and result["opted_out"] is True
        assert OptOut.objects.filter(lifted_at__isnull=True).count() == 3

    def test_stop_after_a_read_makes_the_read_token_stale(self, crm: Any) -> None:
        cid = create_contact(crm)
        token = _token(crm, cid)
        _opt_out(crm, contact_id=cid)
        with pytest.raises(ApplicationError) as err:
            upsert(crm, contact_id=cid, base_version_token=token, tags=["x"])
        assert err.value.code == ErrorCode.STALE_VERSION_TOKEN
        assert phone_is_suppressed("+85291234567")

    def test_a_held_upsert_approved_after_a_stop_fails_and_the_stop_survives(self, crm: Any, approver: Any) -> None:
        from compliance.services import action_request_approve

        cid = create_contact(crm)
        ApprovalPolicy.objects.create(
            action=ActionType.CONTACTS_IMPORT,
            condition=Condition.ALWAYS,
            approver_role=Group.objects.get(name=Role.APPROVER),
        )
        held = upsert(crm, contact_id=cid, base_version_token=_token(crm, cid), tags=["x"])
        assert held["status"] == "pending_approval"
        _opt_out(crm, contact_id=cid)
        outcome = action_request_approve(actor=api_actor(approver), action_request_id=held["action_request_id"])
        assert "stale_version_token" in str(outcome)
        assert phone_is_suppressed("+85291234567") and Contact.objects.get(pk=cid).tags == []

    def test_list_counts_by_reason_and_masks(self, crm: Any, marketing: Any) -> None:
        _opt_out(crm, phone="+85291234567", reason="stop")
        _opt_out(crm, phone="+85261234567", reason="do_not_call")
        listed = opt_outs_list(actor=api_actor(marketing))
        assert listed["count"] == 2 and listed["active_by_reason"]["stop"] == 1
        assert {o["phone"] for o in listed["opt_outs"]} == {"+852****4567"}
        assert opt_outs_list(actor=api_actor(crm), reason="stop")["opt_outs"][0]["phone"] == "+85291234567"
        with pytest.raises(ApplicationError) as err:
            opt_outs_list(actor=api_actor(crm), reason="nope")
        assert err.value.field == "reason"

    def test_repeated_opt_outs_keep_one_active_record_per_reason(self, crm: Any) -> None:
        first = _opt_out(crm, phone="+85291234567")
        second = _opt_out(crm, phone="+85291234567")
        assert second["already_opted_out"] is True and second["opt_out_id"] == first["opt_out_id"]
        assert AuditLog.objects.filter(action="opt_out.record").count() == 2


# --- frequency caps -------------------------------------------------------------------------------


def _sent(phone: str, hours_ago: float, purpose: str = MessagePurpose.MARKETING, **kw: Any) -> None:
    gateway, _ = Gateway.objects.get_or_create(code="cap-gw", defaults={"name": "g", "provider": Provider.SIMULATOR})
    OutboundMessage.objects.create(
        gateway=gateway,
        sender_id="#SHOPHK",
        destination=phone,
        country="HK",
        body="hi",
        encoding="GSM-7",
        segments=1,
        cost=Decimal("0.1"),
        purpose=purpose,
        quota_reference="q",
        created_at=timezone.now() - timedelta(hours=hours_ago),
        **kw,
    )


@pytest.mark.django_db
def test_frequency_caps_are_applied_in_sql_from_the_send_history() -> None:
    caps = {"per_day": 1, "per_week": 2, "per_campaign": 1, "transactional_per_day": 2, "min_hours_between": 0}
    _sent("+85291111111", 2)  # texted today -> per_day
    _sent("+85292222222", 30)  # yesterday and 3 days ago -> per_week
    _sent("+85292222222", 72)
    _sent("+85293333333", 30)  # once this week: free
    _sent("+85294444444", 2, state=MessageState.FAILED)  # never left: does not count
    _sent("+85295555555", 1, purpose=MessagePurpose.TRANSACTIONAL)  # other purpose
    capped = frequency_capped_destinations(caps=caps)
    as_set = {name: set(qs.values_list("destination", flat=True)) for name, qs in capped.items()}
    assert as_set["per_day"] == {"+85291111111"}
    assert as_set["per_week"] == {"+85292222222"}
    assert "transactional_per_day" not in as_set  # marketing check only
    # Subqueries, composable into one SQL statement.
    assert "SELECT" in str(capped["per_day"].query)
    tx = frequency_capped_destinations(caps=caps, purpose=MessagePurpose.TRANSACTIONAL)
    assert set(tx) == {"transactional_per_day"}
    _sent("+85295555555", 3, purpose=MessagePurpose.TRANSACTIONAL)
    assert set(tx["transactional_per_day"].values_list("destination", flat=True)) == {"+85295555555"}
    gap = frequency_capped_destinations(caps={**caps, "min_hours_between": 48})
    assert set(gap["min_hours_between"].values_list("destination", flat=True)) == {
        "+85291111111",
        "+85292222222",
        "+85293333333",
    }
    assert frequency_blocked_purpose(MessagePurpose.MARKETING, {**caps, "per_day": 0})
    assert not frequency_blocked_purpose(MessagePurpose.MARKETING, caps)


@pytest.mark.django_db
def test_frequency_caps_get_reads_the_configuration() -> None:
    got = frequency_caps_get()
    assert got["caps"]["per_day"] == 1 and got["caps"]["per_week"] == 3
    assert {w["name"] for w in got["windows"]} >= {"per_day", "per_week", "transactional_per_day"}
    assert "OTP is exempt" in got["applies_to"]


# --- the real race: STOP committed while an upsert with an older token is in flight ---------------


@postgres_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("upsert_first", [True, False], ids=["upsert-holds-the-row", "stop-commits-first"])
def test_race_stop_versus_upsert_with_an_older_token(
    crm: Any, upsert_first: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both orders, with real threads and transactions: the upsert takes the contact's row lock
    and is held inside its transaction while the STOP waits; or the STOP commits first and the
    upsert, still holding the older token, is refused. Either way the opt-out survives."""
    from contacts import services

    phone = "+85291234567"
    cid = create_contact(crm, phone=phone)
    token = _token(crm, cid)
    in_flight, release = threading.Event(), threading.Event()
    original = services._check_crm_key
    calls: list[int] = []

    def slow_check(payload: dict[str, Any], contact: Any) -> None:
        # Called by check() and again by execute() once the contact row is locked: hold the
        # upsert at that second call, its lock taken and its transaction open.
        original(payload, contact)
        if threading.current_thread().name == "upsert":
            calls.append(1)
            if len(calls) == 2:
                in_flight.set()
                release.wait(10)

    monkeypatch.setattr(services, "_check_crm_key", slow_check)
    results: dict[str, Any] = {}

    def run_upsert() -> None:
        try:
            results["upsert"] = upsert(crm, contact_id=cid, base_version_token=token, tags=["race"])
        except Exception as exc:
            results["upsert"] = exc
        finally:
            connection.close()

    def run_stop() -> None:
        try:
            results["stop"] = contact_opt_out(
                actor=Actor.system("inbound_sms:test"), idempotency_key=key("stop"), phone=phone, reason="stop"
            )
        except Exception as exc:
            results["stop"] = exc
        finally:
            connection.close()

    upserter = threading.Thread(target=run_upsert, name="upsert")
    stopper = threading.Thread(target=run_stop, name="stop")
    if upsert_first:
        upserter.start()
        assert in_flight.wait(10)
        stopper.start()
        stopper.join(0.5)
        assert stopper.is_alive(), ("the STOP must wait for the locked contact row", results)
        release.set()
    else:
        release.set()
        stopper.start()
        stopper.join(10)
        upserter.start()
    upserter.join(10)
    stopper.join(10)

    assert isinstance(results["stop"], dict) and results["stop"]["result"]["suppressed"] is True, results
    assert phone_is_suppressed(phone)
    got = contact_get(actor=api_actor(crm), contact_id=cid)
    assert got["opted_out"] is True and got["sendable"] is False
    if upsert_first:
        # The upsert committed first; the STOP then bumped the version past it.
        assert results["upsert"]["status"] == "executed" and got["tags"] == ["race"] and got["version"] == 3
    else:
        assert isinstance(results["upsert"], ApplicationError), results
        assert results["upsert"].code == ErrorCode.STALE_VERSION_TOKEN
        assert got["tags"] == [] and got["version"] == 2


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_race_many_stops_and_upserts_on_one_token(crm: Any) -> None:
    from tests.support.db import race

    cid = create_contact(crm)
    token = _token(crm, cid)

    def work(i: int) -> Any:
        if i % 2:
            return contact_opt_out(actor=api_actor(crm), idempotency_key=key(f"s{i}"), contact_id=cid, reason="stop")
        return upsert(crm, contact_id=cid, base_version_token=token, tags=[f"t{i}"])

    results = race(6, work)
    upserts = [r for i, r in enumerate(results) if i % 2 == 0]
    assert sum(isinstance(r, dict) for r in upserts) <= 1, results
    assert all(isinstance(r, dict) for i, r in enumerate(results) if i % 2), results
    assert phone_is_suppressed("+85291234567")
    assert OptOut.objects.filter(lifted_at__isnull=True).count() == 1
