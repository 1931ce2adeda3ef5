"""Lifting an opt-out is its own governed action, opt_outs.update, held per its policy on every
path (service, REST, MCP); a START reply is the person's own request (issue 14, item 2)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from compliance.models import ActionRequest, ActionType, ApprovalPolicy, Condition, OptOut
from compliance.optouts import phone_is_suppressed
from compliance.roles import Role
from compliance.services import action_request_approve
from contacts.optouts import contact_opt_out
from contacts.selectors import contact_get
from gateways.adapters.base import InboundEvent
from gateways.delivery.inbound import inbound_receive
from gateways.models import Gateway
from tests.support.actors import actor
from tests.support.contacts import api_actor, consent, create_contact, key, upsert
from tests.support.mcp import run, structured

PHONE = "+85291234567"


def _policy(action: str, condition: str = Condition.ALWAYS) -> ApprovalPolicy:
    return ApprovalPolicy.objects.create(
        action=action, condition=condition, approver_role=Group.objects.get(name=Role.APPROVER)
    )


def _stopped(crm: Any) -> int:
    cid = create_contact(crm)
    contact_opt_out(actor=api_actor(crm), idempotency_key=key("oo"), contact_id=cid, reason="stop")
    assert phone_is_suppressed(PHONE)
    return cid


def _lift_fields(crm: Any, cid: int) -> dict[str, Any]:
    token = contact_get(actor=api_actor(crm), contact_id=cid)["base_version_token"]
    fresh = consent(obtained_at=timezone.now().isoformat(), proof_reference="self-asserted")
    return {"contact_id": cid, "base_version_token": token, "lift_opt_out": True, "consent": fresh, "source": "crm"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("policy_action", "condition"),
    [
        (ActionType.OPT_OUTS_UPDATE, Condition.ALWAYS),
        (ActionType.OPT_OUTS_UPDATE, Condition.SENSITIVE_CONTENT),
        # A contact-change policy still applies: adding lift_opt_out cannot side-step it.
        (ActionType.CONTACTS_IMPORT, Condition.ALWAYS),
    ],
)
def test_a_lift_is_held_as_opt_outs_update_and_runs_on_approval(
    make_user: Any, approver: Any, policy_action: str, condition: str
) -> None:
    crm = make_user(Role.CRM)
    cid = _stopped(crm)
    _policy(policy_action, condition)
    fields = _lift_fields(crm, cid)
    held = upsert(crm, idempotency_key="lift-0001", **fields)
    assert held["status"] == "pending_approval" and held["action"] == "opt_outs.update", held
    assert phone_is_suppressed(PHONE)  # nothing lifted while it waits
    request = ActionRequest.objects.get(pk=held["action_request_id"])
    assert request.action == ActionType.OPT_OUTS_UPDATE
    # Replaying the same key while pending answers the same pending result.
    assert upsert(crm, idempotency_key="lift-0001", **fields) == held
    done = action_request_approve(actor=actor(approver), action_request_id=request.pk)
    assert done["state"] == "executed", done
    assert not phone_is_suppressed(PHONE)
    assert OptOut.objects.get().lifted_at is not None


@pytest.mark.django_db
def test_an_opt_outs_update_policy_does_not_hold_plain_contact_edits(make_user: Any) -> None:
    crm = make_user(Role.CRM)
    _policy(ActionType.OPT_OUTS_UPDATE)
    cid = create_contact(crm)  # consent, no lift: contacts.import, no policy
    assert cid and not ActionRequest.objects.exists()


@pytest.mark.django_db
def test_without_a_policy_the_lift_executes(make_user: Any) -> None:
    crm = make_user(Role.CRM)
    cid = _stopped(crm)
    done = upsert(crm, **_lift_fields(crm, cid))
    assert done["status"] == "executed" and done["action"] == "opt_outs.update"
    assert done["result"]["lifted_opt_outs"] == 1 and not phone_is_suppressed(PHONE)


@pytest.mark.django_db
def test_rest_answers_202_and_keeps_the_opt_out(api_for: Any, make_user: Any) -> None:
    crm = make_user(Role.CRM)
    cid = _stopped(crm)
    _policy(ActionType.OPT_OUTS_UPDATE)
    response = api_for(crm).post(
        "/api/v1/contacts/", {**_lift_fields(crm, cid), "idempotency_key": "rest-lift-01"}, format="json"
    )
    assert response.status_code == 202 and response.json()["action"] == "opt_outs.update", response.json()
    assert phone_is_suppressed(PHONE)


@pytest.mark.django_db(transaction=True)
def test_mcp_holds_it(live_server: Any, make_user: Any, token_for: Any) -> None:
    crm = make_user(Role.CRM)
    cid = _stopped(crm)
    _policy(ActionType.OPT_OUTS_UPDATE)
    fields = {**_lift_fields(crm, cid), "idempotency_key": "mcp-lift-0001"}

    async def call(session: Any) -> Any:
        return await session.call_tool("sms_marketing.contacts.upsert", fields)

    result = structured(run(f"{live_server.url}/mcp", token_for(crm), call))
    assert result["status"] == "pending_approval" and result["action"] == "opt_outs.update", result
    assert phone_is_suppressed(PHONE)


@pytest.mark.django_db
@pytest.mark.usefixtures("known_gateways")
def test_a_start_reply_is_the_persons_own_request_and_lifts_at_once(make_user: Any) -> None:
    crm = make_user(Role.CRM)
    _stopped(crm)
    _policy(ActionType.OPT_OUTS_UPDATE)
    _policy(ActionType.CONTACTS_IMPORT)
    gateway = Gateway.objects.get(code="simulator")
    event = InboundEvent(source=PHONE, destination="#SHOPHK", body="START", provider_message_id="mo-start-1")
    inbound_receive(gateway=gateway, events=[event])
    assert not phone_is_suppressed(PHONE) and not ActionRequest.objects.exists()
