"""Gateways, sender IDs (SSRS) and quotas: the catalogue's safety notes as enforced rules."""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Any

import pytest
from django.db import transaction

from compliance.models import ActionRequest, ActionType, ApprovalPolicy, Condition, RequestState
from compliance.roles import Role
from compliance.services import action_request_approve
from gateways.models import (
    Account,
    Gateway,
    GatewayRate,
    Provider,
    QuotaReservation,
    ReservationState,
    SenderId,
    SenderIdApplication,
    SenderIdKind,
    SenderIdStatus,
)
from gateways.quotas import account_instance, quota_release, quota_reserve, quota_settle, quotas_get
from gateways.rules import sender_id_check_usable, sender_id_kind
from gateways.selectors import gateways_list, segment_prices, sender_ids_list
from gateways.services import sender_id_apply
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.errors import ApplicationError
from tests.support.actors import actor
from tests.support.db import postgres_only, race
from tests.support.gateways import application

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]

SYSTEM = Actor.system("test")


@pytest.fixture
def hk_gateway(db: Any) -> Gateway:
    gateway = Gateway.objects.create(
        code="hk-main",
        name="HK main",
        provider=Provider.SMPP,
        countries=["HK", "MO"],
        priority=10,
        credentials_env={"password": "TEST_SMPP_PASSWORD"},
        settings={"host": "127.0.0.1", "port": 2775},
    )
    GatewayRate.objects.create(gateway=gateway, country="HK", price_per_segment=Decimal("0.30"))
    GatewayRate.objects.create(gateway=gateway, country="MO", price_per_segment=Decimal("0.40"))
    return gateway


# --- sender-ID formats and usability --------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("#SHOPHK", SenderIdKind.SSRS),
        ("#A1", SenderIdKind.SSRS),
        ("DemoShop", SenderIdKind.ALPHANUMERIC),
        ("Shop 24", SenderIdKind.ALPHANUMERIC),
        ("85291234567", SenderIdKind.NUMERIC),
        ("+85291234567", SenderIdKind.NUMERIC),
    ],
)
def test_valid_sender_id_formats(value: str, kind: SenderIdKind) -> None:
    assert sender_id_kind(value) == kind


@pytest.mark.parametrize(
    "value", ["#", "#SHOP-HK", "#12345", "#ABCDEFGHIJK", "TOOLONGSENDER", "Shop!", " Shop", "12", ""]
)
def test_invalid_sender_id_formats_name_the_field(value: str) -> None:
    with pytest.raises(ApplicationError) as err:
        sender_id_kind(value)
    assert err.value.code == "sender_id_invalid_format" and err.value.field == "sender_id" and err.value.hint


def test_hash_id_is_usable_only_when_registered_for_hong_kong(db: Any) -> None:
    pending = SenderId.objects.create(
        value="#PEND", kind="ssrs", brand="P", status=SenderIdStatus.PENDING, regions=["HK"]
    )
    unregistered = SenderId.objects.create(
        value="#NOSSRS", kind="ssrs", brand="N", status=SenderIdStatus.REGISTERED, regions=["HK"]
    )
    ok = SenderId.objects.create(
        value="#OKHK",
        kind="ssrs",
        brand="O",
        status=SenderIdStatus.REGISTERED,
        regions=["HK", "SG"],
        ssrs_registered_regions=["HK"],
    )
    for value, country, message in [
        (pending.value, "HK", "pending"),
        (unregistered.value, "HK", "SSRS"),
        (ok.value, "SG", "SSRS"),
        (ok.value, "US", "not enabled"),
        ("#NOPE", "HK", "not registered with the platform"),
    ]:
        with pytest.raises(ApplicationError) as err:
            sender_id_check_usable(value=value, country=country)
        assert message in err.value.message
    assert sender_id_check_usable(value="#OKHK", country="HK") == ok
    listed = {s["value"]: s for s in sender_ids_list(country="HK")}
    assert listed["#OKHK"]["usable"]["HK"]["usable"] is True
    assert listed["#NOSSRS"]["usable"]["HK"]["usable"] is False


# --- sender_id.apply ---------------------------------------------------------------


def test_apply_creates_a_versioned_application_and_a_pending_id(make_user: Any) -> None:
    officer = make_user(Role.COMPLIANCE)
    result = sender_id_apply(actor=actor(officer), idempotency_key="sid-apply-0001", **application())
    assert result["status"] == "executed"
    reference = result["result"]["reference"]
    assert SenderIdApplication.objects.get(reference=reference).version == 1
    assert SenderId.objects.get(value="#SHOPNEW").status == SenderIdStatus.PENDING
    with pytest.raises(ApplicationError):
        sender_id_check_usable(value="#SHOPNEW", country="HK")
    update = sender_id_apply(
        actor=actor(officer), idempotency_key="sid-apply-0002", **application(reference=reference, reason="BR renewed")
    )
    assert update["result"]["version"] == 2
    assert SenderIdApplication.objects.filter(reference=reference).count() == 2
    again = sender_id_apply(actor=actor(officer), idempotency_key="sid-apply-0001", **application())
    assert again == result and SenderIdApplication.objects.count() == 2


@pytest.mark.parametrize(
    ("overrides", "code", "field"),
    [
        ({"regions": ["SG"]}, "sender_id_region_mismatch", "regions"),
        ({"company_registration_no": "BR-1"}, "company_registration_invalid", "company_registration_no"),
        ({"sender_id": "#HSBCHK"}, "sender_id_impersonation", "sender_id"),
        ({"sender_id": "GOVHK"}, "sender_id_impersonation", "sender_id"),
        ({"documents": [{"name": "business_registration", "status": "missing"}]}, "documents_missing", "documents"),
        ({"sender_id": "#BAD-ID"}, "sender_id_invalid_format", "sender_id"),
        ({"reason": ""}, "validation_error", "reason"),
        ({"reference": "SID-NOPE"}, "not_found", "reference"),
        ({"sender_id": "#SHOPHK"}, "sender_id_already_registered", "sender_id"),
    ],
)
def test_apply_refusals(make_user: Any, overrides: dict[str, Any], code: str, field: str) -> None:
    with pytest.raises(ApplicationError) as err:
        sender_id_apply(
            actor=actor(make_user(Role.TECHNICAL)), idempotency_key="sid-apply-0003", **application(**overrides)
        )
    assert (err.value.code, err.value.field) == (code, field)
    assert not SenderIdApplication.objects.exists()


def test_apply_refused_for_accounts_without_the_permission(marketing: Any) -> None:
    with pytest.raises(ApplicationError) as err:
        sender_id_apply(actor=actor(marketing), idempotency_key="sid-apply-0004", **application())
    assert err.value.code == "permission_denied"


def test_apply_follows_the_approval_policy(make_user: Any, approver: Any) -> None:
    from django.contrib.auth.models import Group

    ApprovalPolicy.objects.create(
        action=ActionType.SENDER_ID_APPLY, condition=Condition.ALWAYS, approver_role=Group.objects.get(name="approver")
    )
    officer = make_user(Role.COMPLIANCE)
    pending = sender_id_apply(actor=actor(officer), idempotency_key="sid-apply-0005", **application())
    assert pending["status"] == "pending_approval" and not SenderIdApplication.objects.exists()
    assert ActionRequest.objects.get().payload["documents"][0]["name"] == "business_registration"
    done = action_request_approve(actor=actor(approver), action_request_id=pending["action_request_id"])
    assert done["state"] == RequestState.EXECUTED
    assert SenderIdApplication.objects.get().created_by == officer


# --- gateways and secrets -----------------------------------------------------------


def test_gateways_list_never_shows_secrets(hk_gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SMPP_PASSWORD", "s3cr3t-value")
    listed = {g["code"]: g for g in gateways_list()}["hk-main"]
    assert listed["credentials"] == {"password": {"env": "TEST_SMPP_PASSWORD", "configured": True}}
    assert "s3cr3t-value" not in repr(gateways_list())
    assert {r["country"] for r in listed["rates"]} == {"HK", "MO"}


def test_segment_prices_pick_the_preferred_enabled_gateway(hk_gateway: Gateway) -> None:
    cheap = Gateway.objects.create(code="cheap", name="c", provider=Provider.SIMULATOR, countries=["HK"], priority=50)
    GatewayRate.objects.create(gateway=cheap, country="HK", price_per_segment=Decimal("0.10"))
    prices = segment_prices(countries=["HK", "MO", "US"])
    assert prices["HK"].gateway_code == "hk-main"  # priority first, price second
    assert "US" not in prices  # not covered: never priced as free
    hk_gateway.enabled = False
    hk_gateway.save()
    assert segment_prices(countries=["HK"])["HK"].gateway_code == "cheap"
    assert "MO" not in segment_prices(countries=["MO"])


# --- quotas ------------------------------------------------------------------------------


@pytest.fixture
def funded(db: Any) -> Account:
    account = account_instance()
    account.balance = Decimal("100")
    account.monthly_quota_segments = 1000
    account.save()
    return account


def test_reserve_settle_release(funded: Account) -> None:
    with transaction.atomic():
        quota_reserve(actor=SYSTEM, reference="c1:b1", segments=300, amount=Decimal("60"))
    room = quotas_get()
    assert room["available_segments"] == 700 and room["available_amount"] == "40.0000"
    with pytest.raises(ApplicationError) as err, transaction.atomic():
        quota_reserve(actor=SYSTEM, reference="c1:b2", segments=100, amount=Decimal("41"))
    assert err.value.code == "balance_insufficient"
    with pytest.raises(ApplicationError) as err, transaction.atomic():
        quota_reserve(actor=SYSTEM, reference="c1:b3", segments=701, amount=Decimal("1"))
    assert err.value.code == "quota_exceeded"
    with transaction.atomic():
        quota_settle(actor=SYSTEM, reference="c1:b1", segments=250, amount=Decimal("50"))
    account = Account.objects.get()
    assert account.balance == Decimal("50") and account.segments_used == 250
    with transaction.atomic():
        quota_reserve(actor=SYSTEM, reference="c1:b4", segments=10, amount=Decimal("2"))
        quota_release(actor=SYSTEM, reference="c1:b4")
    assert QuotaReservation.objects.get(reference="c1:b4").state == ReservationState.RELEASED
    assert quotas_get()["available_segments"] == 750


def test_quotas_get_estimates_sendable_per_country(funded: Account, hk_gateway: Gateway) -> None:
    rates = quotas_get()["country_rates"]
    assert rates["HK"]["estimated_sendable_segments"] == 333  # HKD 100 / 0.30, under the 1000 quota
    assert rates["MO"]["estimated_sendable_segments"] == 250


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_race_for_the_last_segments(funded: Account) -> None:
    def reserve(i: int) -> Any:
        with transaction.atomic():
            return quota_reserve(actor=SYSTEM, reference=f"race:{i}", segments=600, amount=Decimal("10"))

    results = race(2, reserve)
    assert sum(isinstance(r, QuotaReservation) for r in results) == 1, results
    assert sum(isinstance(r, ApplicationError) and r.code == "quota_exceeded" for r in results) == 1


def test_env_not_leaked_by_default(hk_gateway: Gateway) -> None:
    os.environ.pop("TEST_SMPP_PASSWORD", None)
    assert gateways_list()[0]["credentials"]["password"]["configured"] is False
