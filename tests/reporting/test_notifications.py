"""review_notification.send on MCP, REST and admin: who may be told, what a body may carry, external
and bulk notifications held for approval, delivery to the inbox and by e-mail after commit."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import mail
from django.test import Client

from compliance.models import ActionRequest, ActionType, RequestState
from compliance.services import action_request_approve
from gateways.platform_config import platform_config_update
from reporting.models import InboxItem, ReviewNotification
from reporting.notifications import review_notification_send
from smsplatform.config_service import platform_config_get
from smsplatform.kernel.actor import Actor, Channel
from smsplatform.models import AuditLog, Notification
from tests.reporting.conftest import key
from tests.support.factories import ApprovalPolicyFactory

pytestmark = [pytest.mark.django_db]

TOOL = "sms_marketing.review_notification.send"
URL = "/api/v1/reporting/notifications/"
ADMIN_URL = "/admin/reporting/reviewnotification/send/"
INTERFACES = ["mcp", "rest", "admin"]


def note(campaign_id: int, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "kind": "cost_anomaly",
        "subject": {"campaign_id": campaign_id},
        "title": "Spring sale cost is above its estimate",
        "body": "Actual cost HKD 12,345.67 on 2026-05-01 at 10:30 is 1.8x the estimate. Please review.",
    }
    data.update(overrides)
    return data


@pytest.fixture
def send(mcp: Any, api_for: Any, admin_client_for: Any, django_capture_on_commit_callbacks: Any) -> Any:
    """send(via, user, data) -> answer; on-commit work (the e-mail task) runs."""

    def call(via: str, user: Any, data: dict[str, Any]) -> dict[str, Any]:
        with django_capture_on_commit_callbacks(execute=True):
            if via == "mcp":
                return mcp(user, TOOL, {**data, "idempotency_key": key("mcp")})
            if via == "rest":
                response = api_for(user).post(URL, {**data, "idempotency_key": key("rest")}, format="json")
                return dict(response.json())
            fields = {
                "kind": data["kind"],
                "campaign_id": data["subject"].get("campaign_id", ""),
                "action_request_id": data["subject"].get("action_request_id", ""),
                "title": data["title"],
                "body": data["body"],
                "recipients": "\n".join(data.get("recipients", [])),
                "idempotency_key": key("admin"),
            }
            response = admin_client_for(user).post(ADMIN_URL, fields)
            if response.status_code == 302:
                return {"status": "redirect", "messages": [str(m) for m in response.wsgi_request._messages]}
            assert response.status_code == 200
            return {"form_errors": {k: " ".join(v) for k, v in response.context["form"].errors.items()}}

    return call


def _refused(answer: dict[str, Any], via: str, field: str, admin_field: str, code: str) -> None:
    if via == "admin":
        assert admin_field in answer["form_errors"], answer
        return
    assert answer["error"]["code"] == code and answer["error"]["field"] == field, answer


@pytest.mark.parametrize("via", INTERFACES)
def test_the_people_responsible_get_an_inbox_item_and_an_email_after_commit(
    via: str, send: Any, owner: Any, ops: Any, crm: Any, campaign: Any
) -> None:
    answer = send(via, ops, note(campaign.pk))
    assert answer.get("status") in ("executed", "redirect"), answer
    notification = ReviewNotification.objects.get()
    # Cost anomaly: the campaign's owner and the operations and marketing role holders; not CRM.
    assert sorted(notification.recipients) == ["ops1", "owner1"]
    assert set(InboxItem.objects.values_list("user__username", flat=True)) == {"ops1", "owner1"}
    assert len(mail.outbox) == 1
    assert sorted(mail.outbox[0].to) == ["ops1@shop.example", "owner1@shop.example"]
    assert "Cost anomaly" in mail.outbox[0].subject and "campaign #" in mail.outbox[0].body
    assert Notification.objects.get().state == "sent"
    assert AuditLog.objects.filter(action="review_notification.send").count() == 1


@pytest.mark.parametrize("via", INTERFACES)
def test_an_unrelated_recipient_is_refused_by_name(via: str, send: Any, ops: Any, crm: Any, campaign: Any) -> None:
    answer = send(via, ops, note(campaign.pk, recipients=["owner1", "crm1"]))
    _refused(answer, via, "recipients.1", "recipients", "notification_recipient_unrelated")
    if via != "admin":
        assert "crm1" in answer["error"]["message"]
    else:
        assert "crm1" in answer["form_errors"]["recipients"]
    assert not ReviewNotification.objects.exists() and not mail.outbox


@pytest.mark.parametrize("via", INTERFACES)
def test_an_unknown_username_is_refused(via: str, send: Any, ops: Any, campaign: Any) -> None:
    answer = send(via, ops, note(campaign.pk, recipients=["ghost"]))
    _refused(answer, via, "recipients.0", "recipients", "notification_recipient_unknown")


@pytest.mark.parametrize("via", INTERFACES)
@pytest.mark.parametrize(
    "field,text",
    [
        ("body", "Customer 9123 4567 complained twice."),
        ("body", "Call +44 20 7946 0958 about the route."),
        ("body", "Affected: 85291234567 and others."),
        ("title", "Failures for +852 6123-4567"),
        ("body", "Opt-outs:\nChan, a@x.hk, HK\nWong, b@x.hk, HK\nLee, c@x.hk, HK\nHo, d@x.hk, HK"),
        ("body", "Please check a@x.hk, b@y.hk and c@z.hk."),
        ("body", "name;tier;district\nA;gold;Wan Chai\nB;gold;Sha Tin\nC;silver;Tsuen Wan\nD;gold;Central"),
    ],
)
def test_phone_numbers_and_lists_are_refused_naming_the_field(
    via: str, field: str, text: str, send: Any, ops: Any, owner: Any, campaign: Any
) -> None:
    answer = send(via, ops, note(campaign.pk, **{field: text}))
    _refused(answer, via, field, field, "notification_personal_data")
    assert not ReviewNotification.objects.exists() and not mail.outbox


def test_amounts_dates_and_masked_numbers_are_not_phone_numbers(ops: Any, owner: Any, campaign: Any) -> None:
    body = "Cost HKD 12,345.67 (2026-05-01 10:30:00), 3.5% failed; e.g. +852 9123 ****; campaign #1234567."
    out = review_notification_send(
        actor=Actor(user=ops, channel=Channel.MCP), idempotency_key=key(), **note(campaign.pk, body=body)
    )
    assert out["status"] == "executed"


@pytest.mark.parametrize("via", INTERFACES)
def test_an_external_address_is_held_for_approval_then_sent(
    via: str,
    send: Any,
    ops: Any,
    owner: Any,
    approver: Any,
    campaign: Any,
    notify_policy: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    answer = send(via, ops, note(campaign.pk, recipients=["owner1", "Agency@Partner.example"]))
    if via == "admin":
        assert "Held for approval" in " ".join(answer["messages"])
    else:
        assert answer["status"] == "pending_approval" and answer["required_role"] == "approver"
    request = ActionRequest.objects.get(action=ActionType.NOTIFICATION_SEND)
    assert request.facts["external"] == ["agency@partner.example"] and request.facts["sensitive"] is True
    assert not ReviewNotification.objects.exists() and not mail.outbox
    with django_capture_on_commit_callbacks(execute=True):
        action_request_approve(actor=Actor(user=approver, channel=Channel.ADMIN), action_request_id=request.pk)
    request.refresh_from_db()
    assert request.state == RequestState.EXECUTED, request.outcome
    notification = ReviewNotification.objects.get()
    assert (
        notification.external_recipients == ["agency@partner.example"] and notification.action_request_id == request.pk
    )
    assert sorted(mail.outbox[0].to) == ["agency@partner.example", "owner1@shop.example"]
    # External addresses get e-mail only; the inbox is for platform users.
    assert list(InboxItem.objects.values_list("user__username", flat=True)) == ["owner1"]


@pytest.mark.parametrize("via", INTERFACES)
def test_an_external_address_with_no_policy_is_refused_not_sent(via: str, send: Any, ops: Any, campaign: Any) -> None:
    answer = send(via, ops, note(campaign.pk, recipients=["agency@partner.example"]))
    _refused(answer, via, "recipients", "recipients", "approval_policy_missing")
    assert not ReviewNotification.objects.exists() and not mail.outbox


@pytest.mark.parametrize("via", INTERFACES)
def test_a_bulk_notification_is_held(
    via: str, send: Any, make_user: Any, ops: Any, owner: Any, campaign: Any, notify_policy: Any
) -> None:
    config = platform_config_get()
    platform_config_update(
        actor=Actor.system("test"),
        changes={"alerts": {**config["config"]["alerts"], "bulk_recipients": 2}},
        base_version_token=config["base_version_token"],
        idempotency_key=key("cfg"),
    )
    make_user("operations", username="ops2")
    out = send(via, ops, note(campaign.pk))
    assert out["status"] == ("redirect" if via == "admin" else "pending_approval"), out
    assert not ReviewNotification.objects.exists() and not mail.outbox
    assert ActionRequest.objects.get().facts["bulk"] is True and ActionRequest.objects.get().facts["recipients"] == 3


def test_platform_users_named_by_email_are_internal(ops: Any, owner: Any, campaign: Any, notify_policy: Any) -> None:
    out = review_notification_send(
        actor=Actor(user=ops, channel=Channel.API),
        idempotency_key=key(),
        **note(campaign.pk, recipients=["OWNER1@shop.example"]),
    )
    assert out["status"] == "executed" and out["result"]["recipients"] == ["owner1"]


def test_an_action_request_notifies_its_requester_and_approvers(
    ops: Any, owner: Any, approver: Any, make_user: Any, campaign: Any, django_capture_on_commit_callbacks: Any
) -> None:
    policy = ApprovalPolicyFactory.create(action=ActionType.NOTIFICATION_SEND, condition="always")
    held = review_notification_send(
        actor=Actor(user=ops, channel=Channel.API), idempotency_key=key(), **note(campaign.pk)
    )
    policy.enabled = False
    policy.save()
    subject = {"action_request_id": held["action_request_id"]}
    outsider = make_user("marketing", username="mkt2")
    with pytest.raises(Exception) as refused:
        review_notification_send(
            actor=Actor(user=ops, channel=Channel.API),
            idempotency_key=key(),
            **note(campaign.pk, kind="review", subject=subject, recipients=[outsider.username]),
        )
    assert getattr(refused.value, "code", None) == "notification_recipient_unrelated"
    with django_capture_on_commit_callbacks(execute=True):
        out = review_notification_send(
            actor=Actor(user=ops, channel=Channel.API),
            idempotency_key=key(),
            **note(campaign.pk, kind="review", subject=subject, title="Please review request"),
        )
    # Its requester, and the approvers its pending request waits for.
    assert out["status"] == "executed" and out["result"]["recipients"] == ["approver1", "ops1"]
    # A result kind is about a campaign, not a request.
    with pytest.raises(Exception) as mismatch:
        review_notification_send(
            actor=Actor(user=ops, channel=Channel.API), idempotency_key=key(), **note(campaign.pk, subject=subject)
        )
    assert getattr(mismatch.value, "code", None) == "notification_subject_mismatch"


def test_without_the_permission_nothing_is_sent(api_for: Any, mcp: Any, crm: Any, campaign: Any) -> None:
    assert mcp(crm, TOOL, {**note(campaign.pk), "idempotency_key": key()})["error"]["code"] == "permission_denied"
    response = api_for(crm).post(URL, {**note(campaign.pk), "idempotency_key": key()}, format="json")
    assert response.status_code == 403
    assert Client().get(ADMIN_URL).status_code == 302
    assert not ReviewNotification.objects.exists()


def test_the_inbox_shows_only_ones_own_items_and_marks_them_read(
    api_for: Any, admin_client_for: Any, ops: Any, owner: Any, crm: Any, campaign: Any
) -> None:
    review_notification_send(actor=Actor(user=ops, channel=Channel.API), idempotency_key=key(), **note(campaign.pk))
    mine = api_for(owner).get("/api/v1/reporting/inbox/").json()
    assert mine["count"] == 1 and mine["items"][0]["read"] is False
    assert api_for(crm).get("/api/v1/reporting/inbox/").json()["count"] == 0
    ops_item = InboxItem.objects.get(user=ops)
    # Marking someone else's item does nothing.
    marked = api_for(owner).post("/api/v1/reporting/inbox/read/", {"item_ids": [ops_item.pk]}, format="json").json()
    assert marked == {"marked": 0}
    assert api_for(owner).post(
        "/api/v1/reporting/inbox/read/", {"item_ids": [mine["items"][0]["item_id"]]}, format="json"
    ).json() == {"marked": 1}
    # Admin "My notifications": own items only, with the mark-read action.
    page = admin_client_for(ops).get("/admin/reporting/inboxitem/")
    assert page.status_code == 200 and "Spring sale cost is above its estimate" in page.content.decode()
    assert list(page.context["cl"].queryset) == [ops_item]
    assert admin_client_for(crm).get(f"/admin/reporting/inboxitem/{ops_item.pk}/change/").status_code in (302, 403, 404)
    admin_client_for(ops).post(
        "/admin/reporting/inboxitem/", {"action": "mark_read", "_selected_action": [ops_item.pk]}
    )
    ops_item.refresh_from_db()
    assert ops_item.read_at is not None
    assert InboxItem.objects.get(user=owner).read_at is not None


@pytest.mark.parametrize("via", ["mcp", "rest"])
def test_an_unknown_flow_subject_is_refused(via: str, send: Any, ops: Any) -> None:
    answer = send(via, ops, {**note(1), "subject": {"flow_id": 987654}})
    assert answer["error"]["code"] == "not_found" and answer["error"]["field"] == "subject.flow_id"


def test_senders_see_what_they_sent_in_the_admin(admin_client_for: Any, ops: Any, owner: Any, campaign: Any) -> None:
    review_notification_send(actor=Actor(user=ops, channel=Channel.API), idempotency_key=key(), **note(campaign.pk))
    assert len(admin_client_for(ops).get("/admin/reporting/reviewnotification/").context["cl"].queryset) == 1
    # The owner (marketing) may send but did not send this one: it is in their inbox, not their sent list.
    assert len(admin_client_for(owner).get("/admin/reporting/reviewnotification/").context["cl"].queryset) == 0


def test_the_inbox_needs_an_authenticated_caller() -> None:
    from rest_framework.test import APIClient

    assert APIClient().get("/api/v1/reporting/inbox/").status_code == 401
