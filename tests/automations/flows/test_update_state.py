"""automations.update_state and automations.list on MCP, REST and the admin: activation refused
without opt-out handling, a frequency limit, a valid approved template or a cost check; stale
tokens; approval policies; pause and archive; the list's fields and numbers; the dry run."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from campaigns.automations.engine import flow_tick
from campaigns.automations.flow_models import Enrolment, EnrolmentState, Flow, FlowState
from compliance.models import ActionType, Condition
from smsplatform.mcp.server import run_tool
from templates.models import VersionApproval
from tests.automations.flows.conftest import active_flow, event, flow_row, key, token
from tests.support.campaigns import policy
from tests.support.factories import PASSWORD
from tests.support.mcp import structured, tool_error
from tests.support.rest import error_of

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]

UPDATE = "sms_marketing.automations.update_state"


def mcp(user: Any, name: str, args: dict[str, Any]) -> Any:
    return run_tool(name, args, SimpleNamespace(user=user, auth=None))


def mcp_activate(user: Any, flow: Flow, **extra: Any) -> Any:
    args = {"flow_id": flow.pk, "operation": "activate", "base_version_token": token(flow), "idempotency_key": key()}
    return mcp(user, UPDATE, {**args, **extra})


def rest_activate(api: Any, flow: Flow, **extra: Any) -> Any:
    body = {"operation": "activate", "base_version_token": token(flow), "idempotency_key": key(), **extra}
    return api.post(f"/api/v1/automations/{flow.pk}/state/", body, format="json")


def admin_activate(user: Any, flow: Flow) -> str:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    page = client.post(
        reverse("admin:automations_flow_changelist"),
        {"action": "flow_activate", "_selected_action": [flow.pk]},
        follow=True,
    )
    return " ".join(str(m) for m in page.context["messages"])


BROKEN = [
    ({"opt_out_exclusion": False}, "flow_opt_out_required"),
    ({"max_per_period": None}, "flow_frequency_required"),
    ({"template_version": None}, "flow_template_invalid"),
    ({"monthly_budget": None}, "flow_cost_check_failed"),
]


@pytest.mark.parametrize(("broken", "code"), BROKEN)
def test_activation_is_refused_without_each_required_rule_on_every_interface(
    world: dict[str, Any], approver_user: Any, api_for: Any, broken: dict[str, Any], code: str
) -> None:
    flow = flow_row(world, **broken)
    assert tool_error(mcp_activate(approver_user, flow))["code"] == code
    response = rest_activate(api_for(approver_user), flow)
    assert response.status_code in (400, 409, 422) and error_of(response)["code"] == code
    assert code in admin_activate(approver_user, flow)
    flow.refresh_from_db()
    assert flow.state == FlowState.DRAFT and flow.version == 1


def test_an_unapproved_or_promotional_template_is_not_valid(world: dict[str, Any], approver_user: Any) -> None:
    promo = world["shipped"].__class__.objects.create(
        template=world["shipped"].template,
        version=2,
        name="Shipped",
        purpose="transactional",
        language="bilingual",
        body="【ShopHK】Order {{order}} shipped! 20% off your next order https://x.example",
        approval_status=VersionApproval.NOT_REQUIRED,
    )
    flow = flow_row(world, template_version=promo)
    error = tool_error(mcp_activate(approver_user, flow))
    assert error["code"] == "flow_template_invalid" and "promotion" in error["message"]
    marketing_template = flow_row(world, template_version=world["reminder"])  # purpose mismatch
    assert tool_error(mcp_activate(approver_user, marketing_template))["code"] == "flow_template_invalid"


def test_a_cost_estimate_over_the_monthly_budget_is_refused(world: dict[str, Any], approver_user: Any) -> None:
    flow = flow_row(world, monthly_budget=Decimal("0.50"))
    for i in range(5):
        event(world, world["contacts"][i % 3], "order_shipped", order_ref=f"A-{i}")
    error = tool_error(mcp_activate(approver_user, flow))
    assert error["code"] == "flow_cost_check_failed" and "HKD 1.50" in error["message"]


def test_activation_on_mcp_runs_the_flow_and_records_who_and_the_cost_check(
    world: dict[str, Any], approver_user: Any
) -> None:
    flow = flow_row(world)
    answer = structured(mcp_activate(approver_user, flow, confirm=True))
    assert answer["status"] == "executed" and answer["result"]["state"] == "active"
    flow.refresh_from_db()
    assert flow.state == FlowState.ACTIVE and flow.version == 2 and flow.updated_by == approver_user
    assert flow.cost_check["within_budget"] is True
    assert flow.versions.count() == 1
    event(world, world["contacts"][0], "order_shipped", order_ref="A-1")
    assert flow_tick()["send"]["sent"] == 1
    listed = structured(mcp(approver_user, "sms_marketing.automations.list", {}))
    [item] = [f for f in listed["flows"] if f["flow_id"] == flow.pk]
    assert item["trigger"]["event_types"] == ["order_shipped"]
    assert item["frequency_limit"] == {"max_per_period": 3, "period_hours": 24, "once_per_order": False, "set": True}
    assert item["opt_out_handling"]["opt_out_exclusion"] is True
    assert item["template_version"]["template_version_id"] == world["shipped"].pk
    assert item["gateway"] == "flowgw" and item["state"] == "active"
    assert item["updated_by"] == approver_user.username and item["updated_at"]
    assert item["numbers"]["7d"]["entered"] == 1 and item["numbers"]["30d"]["sent"] == 1
    assert item["numbers"]["7d"]["cost"] == "0.30"


def test_a_stale_token_is_refused(world: dict[str, Any], approver_user: Any) -> None:
    flow = flow_row(world)
    stale = token(flow)
    assert structured(mcp_activate(approver_user, flow))["status"] == "executed"
    args = {"flow_id": flow.pk, "operation": "pause", "base_version_token": stale, "idempotency_key": key()}
    assert tool_error(mcp(approver_user, UPDATE, args))["code"] == "stale_version_token"


def test_an_approval_policy_holds_a_promotional_activation(world: dict[str, Any], marketer: Any, api_for: Any) -> None:
    policy(ActionType.AUTOMATION_UPDATE, Condition.SENSITIVE_CONTENT)
    flow = flow_row(world)
    response = rest_activate(api_for(marketer), flow)
    assert response.status_code == 202 and response.json()["status"] == "pending_approval"
    flow.refresh_from_db()
    assert flow.state == FlowState.DRAFT
    # Pausing is not sensitive: never held.
    active = active_flow(world)
    body = {"operation": "pause", "base_version_token": token(active), "idempotency_key": key()}
    assert api_for(marketer).post(f"/api/v1/automations/{active.pk}/state/", body, format="json").status_code == 200


def test_update_changes_only_catalogue_fields_and_rechecks_an_active_flow(
    world: dict[str, Any], approver_user: Any
) -> None:
    flow = active_flow(world)
    args = {
        "flow_id": flow.pk,
        "operation": "update",
        "base_version_token": token(flow),
        "idempotency_key": key(),
        "changes": {"opt_out_exclusion": False},
    }
    assert tool_error(mcp(approver_user, UPDATE, args))["code"] == "flow_opt_out_required"
    args = {**args, "idempotency_key": key(), "changes": {"max_per_period": 1, "trigger_event_types": ["order_paid"]}}
    result = structured(mcp(approver_user, UPDATE, args))["result"]
    assert result["state"] == "active" and result["changed"] == ["max_per_period", "trigger_event_types"]
    args = {**args, "idempotency_key": key(), "base_version_token": token(flow), "changes": {"purpose": "marketing"}}
    assert tool_error(mcp(approver_user, UPDATE, args))["code"] == "validation_error"


def test_archiving_drops_pending_steps_and_withdraws_queued_messages(
    world: dict[str, Any], approver_user: Any, api_for: Any
) -> None:
    from gateways.models import MessageState, OutboundMessage

    flow = active_flow(world, steps=[{"kind": "send"}, {"kind": "wait", "minutes": 600}, {"kind": "send"}])
    event(world, world["contacts"][0], "order_shipped", order_ref="A-1")
    flow_tick()
    [queued] = OutboundMessage.objects.filter(reference__startswith=flow.reference_prefix)
    assert queued.state == MessageState.QUEUED
    body = {"operation": "archive", "base_version_token": token(flow), "idempotency_key": key()}
    response = api_for(approver_user).post(f"/api/v1/automations/{flow.pk}/state/", body, format="json")
    result = response.json()["result"]
    assert response.status_code == 200 and (result["dropped_enrolments"], result["withdrawn_messages"]) == (1, 1)
    assert Enrolment.objects.get(flow=flow).state == EnrolmentState.DROPPED
    queued.refresh_from_db()
    assert queued.state == MessageState.FAILED and queued.error_code == "flow_archived"
    body = {"operation": "activate", "base_version_token": token(flow), "idempotency_key": key()}
    response = api_for(approver_user).post(f"/api/v1/automations/{flow.pk}/state/", body, format="json")
    assert error_of(response)["code"] == "flow_state"


def test_permissions_on_every_interface(world: dict[str, Any], make_user: Any, api_for: Any) -> None:
    from compliance.roles import Role

    crm = make_user(Role.CRM, username="crmflows")
    flow = flow_row(world)
    assert tool_error(mcp_activate(crm, flow))["code"] == "permission_denied"
    assert rest_activate(api_for(crm), flow).status_code == 403
    assert api_for(crm).get("/api/v1/automations/").status_code == 200
    flow.refresh_from_db()
    assert flow.state == FlowState.DRAFT


def test_rest_create_list_and_dry_run(world: dict[str, Any], marketer: Any, api_for: Any) -> None:
    api = api_for(marketer)
    body = {
        "name": "Cart reminder",
        "purpose": "marketing",
        "trigger_event_types": ["cart_abandoned"],
        "steps": [{"kind": "wait", "minutes": 60}, {"kind": "send"}],
        "exit_conditions": [{"event_type": "order_placed"}],
        "template_version_id": world["reminder"].pk,
        "variables": {"order": "event.order_ref"},
        "sender_id": "#SHOPHK",
        "gateway": "flowgw",
        "idempotency_key": key(),
    }
    created = api.post("/api/v1/automations/", body, format="json")
    assert created.status_code == 200, created.json()
    flow_id = created.json()["flow_id"]
    for contact in world["contacts"]:
        event(world, contact, "cart_abandoned", order_ref=f"C-{contact.pk}")
    from tests.support.factories import OptOutFactory

    OptOutFactory.create(contact=world["contacts"][0])
    dry = api.get(f"/api/v1/automations/{flow_id}/dry-run/", {"days": 7}).json()
    assert dry["trigger_events"] == 3 and dry["would_enter"] == 2 and dry["excluded"]["opted_out"] == 1
    assert all("*" in s["phone"] or "x" in s["phone"].lower() or len(s["phone"]) < 12 for s in dry["sample"])
    assert not Enrolment.objects.exists()  # a dry run writes nothing
    listed = api.get("/api/v1/automations/").json()
    assert [f["name"] for f in listed["flows"]] == ["Cart reminder"]
    bad = api.post("/api/v1/automations/", {**body, "name": "x", "steps": [], "idempotency_key": key()}, format="json")
    assert error_of(bad)["code"] == "flow_invalid"


def test_admin_lists_flows_with_funnel_and_enrolments_and_runs_a_dry_run(
    world: dict[str, Any], approver_user: Any
) -> None:
    flow = active_flow(world)
    event(world, world["contacts"][0], "order_shipped", order_ref="A-1")
    flow_tick()
    client = Client()
    assert client.login(username=approver_user.username, password=PASSWORD)
    assert client.get(reverse("admin:automations_flow_changelist")).status_code == 200
    page = client.get(reverse("admin:automations_flow_change", args=[flow.pk]))
    assert page.status_code == 200 and "Funnel per step" in page.content.decode()
    dry = client.get(reverse("admin:automations_flow_dry_run", args=[flow.pk]), {"days": 7})
    assert dry.status_code == 200 and "would_enter" in dry.content.decode().replace(" ", "_").lower()
    enrolments = client.get(reverse("admin:automations_enrolment_changelist"), {"q": str(world["contacts"][0].pk)})
    assert enrolments.status_code == 200 and world["contacts"][0].phone not in enrolments.content.decode()
    message = admin_activate(approver_user, flow_row(world))
    assert "activate done" in message
