"""The flow editor of the staff app (Django's test client; SQLite and PostgreSQL): a draft created
through the form, and each safety rule tried through the form -- refused by the same service as on
MCP and REST, with the error next to the field it names."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from campaigns.automations.flow_models import Flow, FlowState
from campaigns.automations.flow_services import flow_update_state
from compliance.models import ActionRequest, ActionType, Condition, RequestState
from compliance.roles import Role
from smsplatform.models import AuditLog
from templates.models import Purpose
from tests.automations.flows.conftest import act, flow_row, key, token
from tests.support.campaigns import policy
from tests.support.factories import TemplateFactory, TemplateVersionFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]+)"', html.split('id="flow-editor"', 1)[1])
    assert found is not None, f"no hidden {name}"
    return found.group(1)


def field_errors(html: str, field: str) -> list[str]:
    """The error codes rendered inside the field's own block (its label ... the end of its paragraph)."""
    block = re.search(rf'<label for="id_{field}">.*?</p>', html, re.S)
    assert block is not None, f"no field {field}"
    return re.findall(r'class="error field-error" role="alert" data-code="([^"]+)"', block.group(0))


def new_data(world: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {
        "name": "Shipped notice",
        "purpose": "transactional",
        "trigger_event_types": ["order_shipped"],
        "trigger_anchor": "occurred_at",
        "trigger_offset_minutes": "0",
        "steps": "wait 30\nsend",
        "exit_conditions": "order_refunded reference",
        "template_version_id": str(world["shipped"].pk),
        "variables": "order = event.order_ref",
        "sender_id": "#SHOPHK",
        "gateway": "flowgw",
        "opt_out_exclusion": "on",
        "max_per_period": "3",
        "period_hours": "24",
        "monthly_budget": "1000",
        "reason": "new flow",
        **overrides,
    }


def edit_form(client: Client, flow: Flow, **overrides: Any) -> dict[str, Any]:
    """What the edit page's form posts when its fields are left as they are, with ``overrides``;
    a value of None unticks a box."""
    flow.refresh_from_db()
    html = client.get(f"/app/automations/{flow.pk}/edit/").content.decode()
    data: dict[str, Any] = {
        "key": hidden(html, "key"),
        "token": hidden(html, "token"),
        "trigger_event_types": list(flow.trigger_event_types),
        "template_version_id": str(flow.template_version_id or ""),
        "variables": "\n".join(f"{k} = {v}" for k, v in flow.variables.items()),
        "sender_id": flow.sender_id,
        "gateway": flow.gateway.code if flow.gateway else "",
        "opt_out_exclusion": "on" if flow.opt_out_exclusion else None,
        "max_per_period": str(flow.max_per_period or ""),
        "period_hours": str(flow.period_hours or ""),
        "monthly_budget": str(flow.monthly_budget or ""),
        "reason": "edit",
        **overrides,
    }
    return {k: v for k, v in data.items() if v is not None}


def test_a_draft_is_created_through_the_form_once(world: dict[str, Any], marketer: Any) -> None:
    client = logged_in(marketer)
    page = client.get("/app/automations/new/")
    assert page.status_code == 200
    data = {**new_data(world), "key": hidden(page.content.decode(), "key")}
    first = client.post("/app/automations/new/", data)
    assert first.status_code == 302, first.content.decode()[-6000:]
    flow = Flow.objects.get()
    assert first["Location"] == f"/app/automations/{flow.pk}/"
    assert flow.state == FlowState.DRAFT and flow.created_by == marketer
    assert flow.steps == [{"kind": "wait", "minutes": 30}, {"kind": "send"}]
    assert flow.exit_conditions == [{"event_type": "order_refunded", "match": "reference"}]
    assert flow.variables == {"order": "event.order_ref"} and flow.max_per_period == 3
    assert AuditLog.objects.filter(user=marketer, channel="form", action="flow.create").exists()
    # Submitting twice writes once.
    assert client.post("/app/automations/new/", data).status_code == 302
    assert Flow.objects.count() == 1
    # The detail page offers the editor.
    assert f"/app/automations/{flow.pk}/edit/" in client.get(first["Location"]).content.decode()


def test_a_malformed_step_and_an_unknown_event_type_are_refused_next_to_their_fields(
    world: dict[str, Any], marketer: Any
) -> None:
    client = logged_in(marketer)
    response = client.post("/app/automations/new/", new_data(world, steps="wait soon\nsend"))
    assert response.status_code == 400
    assert field_errors(response.content.decode(), "steps") == ["flow_invalid"]
    response = client.post("/app/automations/new/", new_data(world, steps="wait 30"))
    assert field_errors(response.content.decode(), "steps") == ["flow_invalid"]
    response = client.post("/app/automations/new/", new_data(world, trigger_event_types=["not_an_event"]))
    html = response.content.decode()
    fieldset = html.split('id="trigger-event-types"', 1)[1].split("</fieldset>", 1)[0]
    assert response.status_code == 400 and 'data-code="flow_invalid"' in fieldset
    response = client.post("/app/automations/new/", new_data(world, trigger_payload_match="{not json"))
    assert field_errors(response.content.decode(), "trigger_payload_match") == ["flow_invalid"]
    response = client.post("/app/automations/new/", new_data(world, filters="{not json"))
    assert response.status_code == 400 and field_errors(response.content.decode(), "filters")
    response = client.post("/app/automations/new/", new_data(world, variables="order event.order_ref"))
    assert field_errors(response.content.decode(), "variables") == ["flow_invalid"]
    response = client.post("/app/automations/new/", new_data(world, max_per_period="three"))
    assert field_errors(response.content.decode(), "max_per_period") == ["flow_invalid"]
    response = client.post("/app/automations/new/", new_data(world, gateway="nope"))
    assert field_errors(response.content.decode(), "gateway") == ["flow_gateway_not_usable"]
    assert not Flow.objects.exists()


def test_activation_without_opt_out_handling_is_refused_next_to_it(world: dict[str, Any], approver_user: Any) -> None:
    flow = flow_row(world)
    client = logged_in(approver_user)
    data = edit_form(client, flow, opt_out_exclusion=None, operation="activate", confirm="on")
    response = client.post(f"/app/automations/{flow.pk}/edit/", data)
    assert response.status_code == 400
    assert field_errors(response.content.decode(), "opt_out_exclusion") == ["flow_opt_out_required"]
    flow.refresh_from_db()
    assert flow.state == FlowState.DRAFT and flow.opt_out_exclusion and flow.version == 1


def test_activation_without_a_frequency_limit_is_refused_next_to_it(world: dict[str, Any], approver_user: Any) -> None:
    flow = flow_row(world)
    client = logged_in(approver_user)
    data = edit_form(client, flow, max_per_period="", operation="activate", confirm="on")
    response = client.post(f"/app/automations/{flow.pk}/edit/", data)
    assert response.status_code == 400
    assert field_errors(response.content.decode(), "max_per_period") == ["flow_frequency_required"]
    flow.refresh_from_db()
    assert flow.state == FlowState.DRAFT and flow.max_per_period == 3


def test_a_template_not_approved_or_of_the_wrong_purpose_is_refused_next_to_the_template(
    world: dict[str, Any], approver_user: Any
) -> None:
    flow = flow_row(world)
    client = logged_in(approver_user)
    # A marketing template on a transactional flow.
    data = edit_form(client, flow, template_version_id=str(world["reminder"].pk), operation="activate", confirm="on")
    response = client.post(f"/app/automations/{flow.pk}/edit/", data)
    assert response.status_code == 400
    assert field_errors(response.content.decode(), "template_version_id") == ["flow_template_invalid"]
    # A version whose approval is not (or no longer) valid.
    template = TemplateFactory.create(name="Unapproved", purpose=Purpose.TRANSACTIONAL, first_version=None)
    unapproved = TemplateVersionFactory.create(
        template=template,
        body="【ShopHK】Order {{order}} shipped.",
        fields=[{"name": "order", "type": "code", "charset": "gsm", "max_length": 20, "example": "ORD-1"}],
    )
    unapproved.approval_status = "pending"
    unapproved.save()
    data = edit_form(client, flow, template_version_id=str(unapproved.pk), operation="activate", confirm="on")
    response = client.post(f"/app/automations/{flow.pk}/edit/", data)
    assert response.status_code == 400
    assert field_errors(response.content.decode(), "template_version_id") == ["flow_template_invalid"]
    flow.refresh_from_db()
    assert flow.state == FlowState.DRAFT and flow.template_version == world["shipped"]


def test_a_budget_below_the_estimate_and_a_bad_gateway_are_refused_next_to_them(
    world: dict[str, Any], approver_user: Any
) -> None:
    flow = flow_row(world)
    client = logged_in(approver_user)
    data = edit_form(client, flow, gateway="nope", operation="activate", confirm="on")
    response = client.post(f"/app/automations/{flow.pk}/edit/", data)
    assert response.status_code == 400
    assert field_errors(response.content.decode(), "gateway") == ["flow_gateway_not_usable"]
    data = edit_form(client, flow, monthly_budget="", operation="activate", confirm="on")
    response = client.post(f"/app/automations/{flow.pk}/edit/", data)
    assert field_errors(response.content.decode(), "monthly_budget") == ["flow_cost_check_failed"]


def test_save_then_save_and_activate(world: dict[str, Any], approver_user: Any) -> None:
    flow = flow_row(world, max_per_period=None)
    client = logged_in(approver_user)
    saved = client.post(
        f"/app/automations/{flow.pk}/edit/", edit_form(client, flow, max_per_period="2", operation="update")
    )
    assert saved.status_code == 200, saved.content.decode()[-6000:]
    assert 'id="changed-fields">max_per_period<' in saved.content.decode()
    flow.refresh_from_db()
    assert flow.state == FlowState.DRAFT and flow.max_per_period == 2 and flow.version == 2
    activated = client.post(
        f"/app/automations/{flow.pk}/edit/", edit_form(client, flow, operation="activate", confirm="on")
    )
    assert activated.status_code == 200, activated.content.decode()[-6000:]
    flow.refresh_from_db()
    assert flow.state == FlowState.ACTIVE and flow.updated_by == approver_user
    # Nothing changed: the service says so, beside the buttons.
    same = client.post(f"/app/automations/{flow.pk}/edit/", edit_form(client, flow, operation="update"))
    assert same.status_code == 400
    assert 'data-code="flow_invalid"' in same.content.decode().split('id="operation-errors"', 1)[1]


def test_a_marketers_activation_is_held_when_the_policy_holds_it(world: dict[str, Any], marketer: Any) -> None:
    policy(ActionType.AUTOMATION_UPDATE, Condition.SENSITIVE_CONTENT)
    flow = flow_row(world)
    client = logged_in(marketer)
    response = client.post(f"/app/automations/{flow.pk}/edit/", edit_form(client, flow, operation="activate"))
    assert response.status_code == 200, response.content.decode()[-6000:]
    html = response.content.decode()
    assert 'data-status="pending_approval"' in html and 'class="request-state">pending<' in html
    request = ActionRequest.objects.get()
    assert request.state == RequestState.PENDING and request.requested_by_id == marketer.pk
    flow.refresh_from_db()
    assert flow.state == FlowState.DRAFT


def test_a_version_token_conflict_is_shown_and_nothing_is_written(world: dict[str, Any], approver_user: Any) -> None:
    flow = flow_row(world)
    client = logged_in(approver_user)
    data = edit_form(client, flow, max_per_period="5", operation="update")
    # Someone else changes the flow after the page was read.
    flow_update_state(
        actor=act(approver_user),
        flow_id=flow.pk,
        operation="update",
        base_version_token=token(flow),
        changes={"period_hours": 48},
        idempotency_key=key(),
    )
    response = client.post(f"/app/automations/{flow.pk}/edit/", data)
    assert response.status_code == 400
    assert 'data-code="stale_version_token"' in response.content.decode().split('id="operation-errors"', 1)[1]
    flow.refresh_from_db()
    assert flow.max_per_period == 3 and flow.period_hours == 48


def test_a_user_without_the_flow_permissions_gets_403(world: dict[str, Any], make_user: Any) -> None:
    flow = flow_row(world)
    client = logged_in(make_user(Role.TECHNICAL, username="flowtech2"))
    assert client.get("/app/automations/new/").status_code == 403
    assert client.post("/app/automations/new/", new_data(world)).status_code == 403
    assert client.get(f"/app/automations/{flow.pk}/edit/").status_code == 403
    response = client.post(f"/app/automations/{flow.pk}/edit/", {"operation": "activate", "max_per_period": "9"})
    assert response.status_code == 403
    assert Flow.objects.count() == 1
    flow.refresh_from_db()
    assert flow.state == FlowState.DRAFT and flow.max_per_period == 3
    # Operations may change flows, not create them.
    operations = logged_in(make_user(Role.OPERATIONS, username="flowops"))
    assert operations.get("/app/automations/new/").status_code == 403
    assert operations.get(f"/app/automations/{flow.pk}/edit/").status_code == 200


def test_copy_into_a_new_draft_prefills_every_field(world: dict[str, Any], marketer: Any) -> None:
    flow = flow_row(world, steps=[{"kind": "wait", "minutes": 45}, {"kind": "send"}])
    html = logged_in(marketer).get(f"/app/automations/new/?from={flow.pk}").content.decode()
    assert f"{flow.name} (copy)" in html and "wait 45\nsend" in html and "order = event.order_ref" in html


def test_the_editor_speaks_traditional_chinese(world: dict[str, Any], marketer: Any) -> None:
    client = logged_in(marketer)
    client.post("/app/language/", {"language": "zh-hant", "next": "/app/automations/new/"})
    html = client.get("/app/automations/new/").content.decode()
    assert 'lang="zh-Hant"' in html and "新流程" in html and "建立草稿" in html and "排除已退訂號碼" in html


def test_saving_another_field_keeps_an_older_pinned_version_and_a_disabled_gateway(
    world: dict[str, Any], approver_user: Any
) -> None:
    """The selects offer the flow's own pinned version and gateway even when they are not current or
    enabled: a save of the frequency limit changes nothing else."""
    old = world["shipped"]
    newer = TemplateVersionFactory.create(
        template=old.template,
        version=old.version + 1,
        body="【ShopHK】Order {{order}} is on its way.",
        fields=[{"name": "order", "type": "code", "charset": "gsm", "max_length": 20, "example": "ORD-1"}],
    )
    old.template.version = newer.version
    old.template.save()
    world["gateway"].enabled = False
    world["gateway"].save()
    flow = flow_row(world)
    client = logged_in(approver_user)
    html = client.get(f"/app/automations/{flow.pk}/edit/").content.decode()
    assert re.search(rf'<option value="{old.pk}" selected>', html)
    assert re.search(r'<option value="flowgw" selected>[^<]*\(disabled\)', html)
    assert 'id="dry-run-result"' in html
    # The page posts what it shows.
    data = edit_form(client, flow, max_per_period="4", operation="update")
    response = client.post(f"/app/automations/{flow.pk}/edit/", data)
    assert response.status_code == 200, response.content.decode()[-6000:]
    flow.refresh_from_db()
    assert flow.max_per_period == 4 and flow.template_version == old and flow.gateway == world["gateway"]
    assert flow.versions.get(version=2).changed_fields == ["max_per_period"]
