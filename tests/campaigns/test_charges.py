"""One charging rule (gateways.charges): send_batches.list, delivery_status.get and the quota agree
after a campaign with failures before and after the gateway accepted them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from campaigns.dispatch import batches_advance, campaign_dispatch
from campaigns.models import Campaign
from campaigns.selectors import delivery_status_get, send_batches_list
from campaigns.services import campaign_create_draft, campaign_send_approved
from contacts.models import AudienceMembership
from contacts.optouts import opt_out_record
from gateways.charges import CHARGE_RULE
from gateways.models import MessageState, OutboundMessage
from gateways.quotas import account_instance, quotas_get
from smsplatform.kernel.actor import Actor
from tests.support.campaigns import PHONES, act, draft_data, key
from tests.support.contacts import create_contact

pytestmark = pytest.mark.django_db

INVALID = "+85259000001"  # the simulator refuses it at submission: never accepted
LATE_STOP = "+85291000009"  # opts out after dispatch: suppressed when its message is claimed


def _campaign_with_failures(world: dict[str, Any], marketer: Any, crm: Any, approver_user: Any) -> int:
    for phone in (INVALID, LATE_STOP):
        contact = create_contact(crm, phone=phone, tags=["member"])
        AudienceMembership.objects.create(audience=world["audience"], contact_id=contact)
    draft = campaign_create_draft(actor=act(marketer), data=draft_data(world), idempotency_key=key())["result"]
    # Dispatch without the on-commit kick, so the opt-out lands between dispatch and claim.
    out = campaign_send_approved(
        actor=act(approver_user),
        campaign_id=draft["campaign_id"],
        base_version_token=draft["base_version_token"],
        confirm=True,
        idempotency_key=key(),
    )
    assert out["status"] == "executed", out
    cid = int(draft["campaign_id"])
    campaign = Campaign.objects.get(pk=cid)
    campaign_dispatch(campaign_id=cid, version=campaign.version)
    assert OutboundMessage.objects.filter(batch__campaign_id=cid, state=MessageState.QUEUED).count() == 6
    opt_out_record(actor=Actor.system("t"), phone=LATE_STOP, reason="stop", source="sms")
    for _ in range(3):
        batches_advance(budget_seconds=5)
    return cid


def test_three_reads_and_the_quota_agree_on_one_rule(
    world: dict[str, Any], marketer: Any, crm: Any, approver_user: Any
) -> None:
    balance = account_instance().balance
    cid = _campaign_with_failures(world, marketer, crm, approver_user)
    messages = {m.destination: m for m in OutboundMessage.objects.filter(batch__campaign_id=cid)}
    assert messages[PHONES["undelivered"]].state == MessageState.FAILED  # accepted, then failed
    assert messages[PHONES["undelivered"]].submitted_at is not None
    assert messages[INVALID].state == MessageState.FAILED and messages[INVALID].submitted_at is None
    assert messages[LATE_STOP].state == MessageState.FAILED and messages[LATE_STOP].submitted_at is None
    delivered = [m for m in messages.values() if m.state == MessageState.DELIVERED]
    assert len(delivered) == 3

    # The rule: accepted (delivered, or failed after acceptance) costs; never accepted costs nothing.
    expected = sum((m.cost for m in [*delivered, messages[PHONES["undelivered"]]]), Decimal(0))
    assert expected > 0

    consumed = balance - account_instance().balance
    report = send_batches_list(actor=act(marketer), campaign_id=cid)
    listed = sum(Decimal(b["charged"]) for b in report["batches"])
    assert consumed == listed == Decimal(report["charged_total"]) == expected
    assert report["currency"] == "HKD" and report["charge_rule"] == CHARGE_RULE

    per_message = {}
    for phone in messages:
        (shown,) = delivery_status_get(actor=act(approver_user), phone=phone)["messages"]
        per_message[phone] = (shown["charged"], Decimal(shown["charge"]), shown["currency"])
    assert sum(charge for _charged, charge, _c in per_message.values()) == expected
    assert per_message[PHONES["undelivered"]][:2] == (True, messages[PHONES["undelivered"]].cost)
    assert per_message[INVALID][:2] == (False, Decimal(0))
    assert per_message[LATE_STOP][:2] == (False, Decimal(0))

    quotas = quotas_get()
    assert quotas["charge_rule"] == CHARGE_RULE and Decimal(quotas["balance"]) == balance - expected
    assert quotas["used_segments"] == sum(m.segments for m in [*delivered, messages[PHONES["undelivered"]]])
