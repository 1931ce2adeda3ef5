"""Approval policies and action requests: every governance rule, and a real race."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from unittest import mock

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from compliance.governance import matching_policy, policy_matches
from compliance.models import ActionRequest, ActionType, ApprovalPolicy, Condition, RequestState
from compliance.roles import Role
from compliance.selectors import action_request_status
from compliance.services import action_request_approve, action_request_reject, action_requests_expire
from compliance.tasks import expire_action_requests
from gateways.platform_config import platform_config_update
from smsplatform.config_service import platform_config_data, platform_config_get
from smsplatform.kernel.actor import Actor, Channel
from smsplatform.kernel.errors import ApplicationError, ErrorCode
from smsplatform.models import AuditLog, PlatformConfig
from tests.support.actors import actor
from tests.support.db import postgres_only, race

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]


def request_change(user: Any, token: str, gateway: str = "simulator", key: str = "req-key-0001") -> dict[str, Any]:
    return platform_config_update(
        actor=actor(user, Channel.MCP, "agent"),
        changes={"default_gateway": gateway},
        base_version_token=token,
        idempotency_key=key,
        reason="switch gateway",
    )


@pytest.fixture
def pending(technical: Any, config_policy: ApprovalPolicy, config_token: str) -> int:
    result = request_change(technical, config_token)
    assert result["status"] == "pending_approval"
    return int(result["action_request_id"])


def test_policy_holds_the_write_and_freezes_the_payload(pending: int, technical: Any) -> None:
    request = ActionRequest.objects.get(pk=pending)
    assert request.state == RequestState.PENDING
    assert request.payload["changes"] == {"default_gateway": "simulator"}
    assert (request.requested_by, request.channel, request.token_name) == (technical, "mcp", "agent")
    assert request.required_role.name == Role.APPROVER
    # Nothing changed yet.
    assert PlatformConfig.objects.get().version == 1
    assert AuditLog.objects.filter(action="action_request.create").count() == 1


def test_pending_answer_is_idempotent(technical: Any, config_policy: ApprovalPolicy, config_token: str) -> None:
    first = request_change(technical, config_token, key="same-req-key")
    again = request_change(technical, config_token, key="same-req-key")
    assert first == again and ActionRequest.objects.count() == 1


def test_approval_executes_the_service(pending: int, approver: Any) -> None:
    result = action_request_approve(actor=actor(approver, Channel.ADMIN), action_request_id=pending, reason="ok")
    assert result["state"] == RequestState.EXECUTED
    assert result["result"]["version"] == 2
    assert result["decided_by"] == approver.username
    assert platform_config_data()["default_gateway"] == "simulator"
    update = AuditLog.objects.get(action="config.update")
    # Executed as the requester, linked to the request.
    assert update.user is not None and update.user.username == "tech"
    assert update.action_request_id == pending
    assert AuditLog.objects.filter(action="action_request.approve", user=approver).exists()


def test_requester_can_never_approve_own_request(
    make_user: Any, config_policy: ApprovalPolicy, config_token: str
) -> None:
    both = make_user(Role.TECHNICAL, Role.APPROVER)
    request_id = request_change(both, config_token)["action_request_id"]
    for decide in (
        lambda: action_request_approve(actor=actor(both), action_request_id=request_id),
        lambda: action_request_reject(actor=actor(both), action_request_id=request_id, reason="no"),
    ):
        with pytest.raises(ApplicationError) as err:
            decide()
        assert err.value.code == ErrorCode.APPROVAL_SELF_APPROVAL
    assert ActionRequest.objects.get(pk=request_id).state == RequestState.PENDING


def test_superuser_requester_cannot_self_approve(
    make_user: Any, config_policy: ApprovalPolicy, config_token: str
) -> None:
    boss = make_user(superuser=True)
    request_id = request_change(boss, config_token)["action_request_id"]
    with pytest.raises(ApplicationError) as err:
        action_request_approve(actor=actor(boss), action_request_id=request_id)
    assert err.value.code == ErrorCode.APPROVAL_SELF_APPROVAL


def test_expired_request_cannot_be_approved(pending: int, approver: Any) -> None:
    ActionRequest.objects.filter(pk=pending).update(expires_at=timezone.now() - timedelta(minutes=1))
    with pytest.raises(ApplicationError) as err:
        action_request_approve(actor=actor(approver), action_request_id=pending)
    assert err.value.code == ErrorCode.APPROVAL_EXPIRED
    assert ActionRequest.objects.get(pk=pending).state == RequestState.EXPIRED
    assert PlatformConfig.objects.get().version == 1


def test_final_states_are_final(pending: int, approver: Any, make_user: Any) -> None:
    action_request_reject(actor=actor(approver), action_request_id=pending, reason="not now")
    other = make_user(Role.APPROVER)
    for decide in (
        lambda: action_request_approve(actor=actor(other), action_request_id=pending),
        lambda: action_request_reject(actor=actor(other), action_request_id=pending, reason="again"),
    ):
        with pytest.raises(ApplicationError) as err:
            decide()
        assert err.value.code == ErrorCode.APPROVAL_NOT_PENDING


def test_reject_needs_a_reason(pending: int, approver: Any) -> None:
    with pytest.raises(ApplicationError) as err:
        action_request_reject(actor=actor(approver), action_request_id=pending, reason="  ")
    assert err.value.code == ErrorCode.APPROVAL_REASON_REQUIRED and err.value.field == "reason"


def test_reject_records_reason_and_changes_nothing(pending: int, approver: Any) -> None:
    result = action_request_reject(actor=actor(approver), action_request_id=pending, reason="wrong gateway")
    assert result["state"] == RequestState.REJECTED and result["decision_reason"] == "wrong gateway"
    assert PlatformConfig.objects.get().version == 1


def test_non_approver_and_wrong_role_refused(pending: int, marketing: Any, make_user: Any) -> None:
    with pytest.raises(ApplicationError) as err:
        action_request_approve(actor=actor(marketing), action_request_id=pending)
    assert err.value.code == ErrorCode.PERMISSION_DENIED
    # Compliance may approve in general, but this policy names the approver role.
    Group.objects.get(name=Role.COMPLIANCE).permissions.add(
        *Group.objects.get(name=Role.APPROVER).permissions.filter(codename="approve_actionrequest")
    )
    officer = make_user(Role.COMPLIANCE)
    with pytest.raises(ApplicationError) as err:
        action_request_approve(actor=actor(officer), action_request_id=pending)
    assert err.value.code == ErrorCode.APPROVAL_ROLE_REQUIRED


def test_approval_rechecks_rules_now(pending: int, approver: Any, technical: Any) -> None:
    # Someone changes the configuration after the request was made: its token is stale now.
    ApprovalPolicy.objects.update(enabled=False)
    platform_config_update(
        actor=actor(technical),
        changes={"default_sender_id": "SHOP"},
        base_version_token=platform_config_get()["base_version_token"],
        idempotency_key="direct-change-1",
    )
    result = action_request_approve(actor=actor(approver), action_request_id=pending)
    assert result["state"] == RequestState.FAILED
    assert result["error"]["code"] == ErrorCode.STALE_VERSION_TOKEN
    assert platform_config_data()["default_gateway"] == ""


def test_approval_rechecks_the_requesters_permission(pending: int, approver: Any, technical: Any) -> None:
    technical.groups.clear()
    result = action_request_approve(actor=actor(approver), action_request_id=pending)
    assert result["state"] == RequestState.FAILED and result["error"]["code"] == ErrorCode.PERMISSION_DENIED
    assert PlatformConfig.objects.get().version == 1


def test_failed_execution_leaves_no_partial_write(pending: int, approver: Any) -> None:
    with mock.patch(
        "gateways.platform_config.PlatformConfigVersion.objects.create",
        side_effect=ApplicationError("boom", "simulated failure"),
    ):
        result = action_request_approve(actor=actor(approver), action_request_id=pending)
    assert result["state"] == RequestState.FAILED
    assert PlatformConfig.objects.get().version == 1


def test_expiry_task_expires_only_due_requests(pending: int, technical: Any, config_token: str) -> None:
    other = request_change(technical, config_token, gateway="b", key="req-key-0002")["action_request_id"]
    ActionRequest.objects.filter(pk=pending).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert expire_action_requests() == 1
    assert ActionRequest.objects.get(pk=pending).state == RequestState.EXPIRED
    assert ActionRequest.objects.get(pk=other).state == RequestState.PENDING
    assert AuditLog.objects.filter(action="action_request.expire", channel="system").count() == 1
    assert action_requests_expire(actor=Actor.system("t")) == 0


def test_status_visible_to_requester_and_approvers_only(
    pending: int, approver: Any, marketing: Any, technical: Any
) -> None:
    assert action_request_status(actor=actor(technical), action_request_id=pending)["state"] == "pending"
    assert action_request_status(actor=actor(approver), action_request_id=pending)["state"] == "pending"
    with pytest.raises(ApplicationError) as err:
        action_request_status(actor=actor(marketing), action_request_id=pending)
    assert err.value.code == ErrorCode.NOT_FOUND


# --- policy conditions ---------------------------------------------------------


def _policy(**kw: Any) -> ApprovalPolicy:
    return ApprovalPolicy(action=ActionType.CAMPAIGN_SEND, approver_role=Group(name="approver"), **kw)


def test_conditions() -> None:
    a = Actor(user=None, channel=Channel.MCP)
    config = {
        "schedule": {"time_zone": "Asia/Hong_Kong"},
        "approval": {"business_hours": {"start": "09:00", "end": "19:00", "weekdays": [0, 1, 2, 3, 4]}},
    }
    over = _policy(condition=Condition.RECIPIENTS_OVER, threshold_count=1000)
    assert policy_matches(over, {"recipients": 1001}, a, config)
    assert not policy_matches(over, {"recipients": 1000}, a, config)
    assert policy_matches(over, {}, a, config), "unknown size must not skip approval"
    cost = _policy(condition=Condition.COST_OVER, threshold_amount=Decimal("5000"))
    assert policy_matches(cost, {"cost": "5000.01"}, a, config)
    assert not policy_matches(cost, {"cost": "4999"}, a, config)
    assert policy_matches(cost, {"cost": None}, a, config)
    only_mcp = _policy(condition=Condition.ALWAYS, channels=["mcp"])
    assert policy_matches(only_mcp, {}, a, config)
    assert not policy_matches(only_mcp, {}, Actor(user=None, channel=Channel.ADMIN), config)
    hours = _policy(condition=Condition.OUTSIDE_BUSINESS_HOURS)
    saturday_noon = datetime(2026, 11, 28, 4, 0, tzinfo=UTC)  # 12:00 in Hong Kong
    tuesday_noon = datetime(2026, 11, 24, 4, 0, tzinfo=UTC)
    with mock.patch("compliance.governance.timezone.now", return_value=saturday_noon):
        assert policy_matches(hours, {}, a, config)
    with mock.patch("compliance.governance.timezone.now", return_value=tuesday_noon):
        assert not policy_matches(hours, {}, a, config)


def test_disabled_policy_does_not_apply(config_policy: ApprovalPolicy, technical: Any, config_token: str) -> None:
    config_policy.enabled = False
    config_policy.save()
    assert matching_policy(ActionType.CONFIG_UPDATE, {}, actor(technical)) is None
    assert request_change(technical, config_token)["status"] == "executed"


# --- a real race on an approval (PostgreSQL) ------------------------------------


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_race_two_approvers_execute_once(pending: int, approver: Any, make_user: Any) -> None:
    second = make_user(Role.APPROVER)
    approvers = [approver, second]
    results = race(2, lambda i: action_request_approve(actor=actor(approvers[i]), action_request_id=pending))
    executed = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, ApplicationError)]
    assert len(executed) == 1 and len(refused) == 1, results
    assert refused[0].code == ErrorCode.APPROVAL_NOT_PENDING
    assert PlatformConfig.objects.get().version == 2
    assert AuditLog.objects.filter(action="config.update").count() == 1
