"""Every campaign safety note, tried against the services (the interfaces call exactly these)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.test import TestCase
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from campaigns.dispatch import batches_advance, campaign_dispatch
from campaigns.models import Campaign, CampaignState, SendBatch
from campaigns.progress import campaign_progress
from campaigns.quiet_hours import quiet_release_time
from campaigns.retries import retry_preview
from campaigns.selectors import campaign_get, campaigns_list, delivery_status_get
from campaigns.services import (
    campaign_cancel_schedule,
    campaign_create_draft,
    campaign_schedule,
    campaign_send_approved,
    campaign_update,
    failed_messages_resend,
)
from compliance.models import ActionRequest, ActionType, Condition
from compliance.roles import Role
from compliance.services import action_request_approve
from contacts.models import Segment
from contacts.optouts import opt_out_record
from gateways.models import Account, Gateway, MessageState, OutboundMessage, SenderId, SenderIdStatus
from gateways.platform_config import platform_config_update
from smsplatform.config_service import platform_config_get
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.errors import ApplicationError
from tests.support.campaigns import HK_QUIET_HOURS, PHONES, act, draft_data, key, policy, set_quiet_hours

pytestmark = pytest.mark.django_db


def _draft(world: dict[str, Any], user: Any, **overrides: Any) -> dict[str, Any]:
    out = campaign_create_draft(actor=act(user), data=draft_data(world, **overrides), idempotency_key=key())
    assert out["status"] == "executed", out
    return dict(out["result"])


def _refused(fn: Any, **kwargs: Any) -> ApplicationError:
    with pytest.raises(ApplicationError) as err:
        fn(**kwargs)
    return err.value


def _send_confirmed(approver_user: Any, draft: dict[str, Any]) -> dict[str, Any]:
    """An approver's explicit confirmation (no policy holds it): dispatch runs on commit (eager)."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        out = campaign_send_approved(
            actor=act(approver_user),
            campaign_id=draft["campaign_id"],
            base_version_token=draft["base_version_token"],
            confirm=True,
            idempotency_key=key(),
        )
    assert out["status"] == "executed", out
    return dict(out["result"])


@pytest.fixture
def approver_owned(world: dict[str, Any], approver_user: Any, marketer: Any) -> dict[str, Any]:
    """A draft the approver may see (view_all) and confirm."""
    return _draft(world, marketer)


# --- create_draft: no unconsented segment, no missing opt-out, no over-length, no unknown cost,
# --- no unusable sender ID ----------------------------------------------------------------------


def test_draft_refuses_a_segment_built_on_another_consent(world: dict[str, Any], marketer: Any) -> None:
    segment = Segment.objects.get(pk=world["segment_id"])
    Segment.objects.filter(pk=segment.pk).update(
        criteria={**segment.criteria, "criteria": {"all": [{"consent_purpose": "transactional"}]}}
    )
    err = _refused(campaign_create_draft, actor=act(marketer), data=draft_data(world), idempotency_key=key())
    assert (err.code, err.field) == ("segment_not_consented", "segment_id")


def test_draft_refuses_a_segment_with_nobody_sendable(world: dict[str, Any], marketer: Any) -> None:
    for phone in (PHONES["a"], PHONES["b"], PHONES["c"], PHONES["undelivered"]):
        opt_out_record(actor=Actor.system("t"), phone=phone, reason="stop", source="sms")
    err = _refused(campaign_create_draft, actor=act(marketer), data=draft_data(world), idempotency_key=key())
    assert (err.code, err.field) == ("segment_not_consented", "segment_id")
    assert not Campaign.objects.exists()


def test_draft_refuses_copy_without_opt_out_wording(world: dict[str, Any], marketer: Any) -> None:
    err = _refused(
        campaign_create_draft,
        actor=act(marketer),
        data=draft_data(world, text="【ShopHK】春季優惠全場8折 {{link}}"),
        idempotency_key=key(),
    )
    assert err.code in {"required_wording_missing", "template_wording_missing"} or "unsubscribe" in err.message.lower()
    assert not Campaign.objects.exists()


def test_draft_refuses_over_length_copy(world: dict[str, Any], marketer: Any) -> None:
    long = "【ShopHK】" + "優惠" * 150 + " {{link}} 回覆STOP退訂 Reply STOP to opt out"
    err = _refused(campaign_create_draft, actor=act(marketer), data=draft_data(world, text=long), idempotency_key=key())
    assert err.code == "message_too_long" and err.details["segments"] > 3 and err.details["cut_text"]


def test_draft_refuses_unknown_cost_and_unusable_sender_ids(world: dict[str, Any], marketer: Any) -> None:
    Gateway.objects.create(code="no-rates", name="No rates", provider="simulator", countries=["HK"])
    err = _refused(
        campaign_create_draft, actor=act(marketer), data=draft_data(world, gateway="no-rates"), idempotency_key=key()
    )
    assert (err.code, err.field) == ("cost_unknown", "gateway")
    err = _refused(
        campaign_create_draft, actor=act(marketer), data=draft_data(world, sender_id="#NOSUCH"), idempotency_key=key()
    )
    assert (err.code, err.field) == ("sender_id_unknown", "sender_id")
    SenderId.objects.filter(value="#SHOP").update(ssrs_registered_regions=[])
    err = _refused(
        campaign_create_draft, actor=act(marketer), data=draft_data(world, sender_id="#SHOP"), idempotency_key=key()
    )
    assert (err.code, err.field) == ("sender_id_not_usable", "sender_id")
    assert not Campaign.objects.exists()


def test_draft_refuses_raw_links_and_an_unused_short_link(world: dict[str, Any], marketer: Any) -> None:
    raw = "【ShopHK】優惠 https://evil.example.net/x 回覆STOP退訂 Reply STOP to opt out"
    err = _refused(campaign_create_draft, actor=act(marketer), data=draft_data(world, text=raw), idempotency_key=key())
    assert err.code == "landing_page_inconsistent"
    no_placeholder = "【ShopHK】優惠 回覆STOP退訂 Reply STOP to opt out"
    err = _refused(
        campaign_create_draft, actor=act(marketer), data=draft_data(world, text=no_placeholder), idempotency_key=key()
    )
    assert (err.code, err.field) == ("landing_page_inconsistent", "short_link_id")


# --- update: named fields only, version tokens, approval lost on change ------------------------------


def test_update_changes_only_named_fields_and_refuses_protected_ones(world: dict[str, Any], marketer: Any) -> None:
    draft = _draft(world, marketer)
    out = campaign_update(
        actor=act(marketer),
        campaign_id=draft["campaign_id"],
        base_version_token=draft["base_version_token"],
        changes={"send_goal": "More visits"},
        idempotency_key=key(),
    )
    assert out["status"] == "executed" and out["result"]["changed"] == ["send_goal"]
    campaign = Campaign.objects.get(pk=draft["campaign_id"])
    assert campaign.send_goal == "More visits" and campaign.name == "Spring sale" and campaign.version == 2
    for protected in ("state", "approved_version", "version", "unsubscribe"):
        err = _refused(
            campaign_update,
            actor=act(marketer),
            campaign_id=campaign.pk,
            base_version_token=out["result"]["base_version_token"],
            changes={protected: "x"},
            idempotency_key=key(),
        )
        assert (err.code, err.field) == ("validation_error", protected)
    stale = _refused(
        campaign_update,
        actor=act(marketer),
        campaign_id=campaign.pk,
        base_version_token=draft["base_version_token"],
        changes={"send_goal": "Again"},
        idempotency_key=key(),
    )
    assert stale.code == "stale_version_token" and "current_version_token" in stale.details


def test_changing_a_scheduled_campaign_sends_it_back_to_draft(
    world: dict[str, Any], marketer: Any, approver_user: Any
) -> None:
    draft = _draft(world, marketer)
    scheduled = campaign_schedule(
        actor=act(approver_user),
        campaign_id=draft["campaign_id"],
        base_version_token=draft["base_version_token"],
        schedule={"send_at": (timezone.now() + timedelta(days=1)).isoformat()},
        confirm=True,
        idempotency_key=key(),
    )
    assert scheduled["status"] == "executed"
    assert PeriodicTask.objects.get(name=f"campaign:{draft['campaign_id']}").enabled
    changed = campaign_update(
        actor=act(marketer),
        campaign_id=draft["campaign_id"],
        base_version_token=scheduled["result"]["base_version_token"],
        changes={"text": draft_data(world)["text"].replace("8折", "7折")},
        idempotency_key=key(),
    )
    assert changed["status"] == "executed"
    campaign = Campaign.objects.get(pk=draft["campaign_id"])
    assert campaign.state == CampaignState.DRAFT and campaign.approved_version is None
    assert not PeriodicTask.objects.get(name=f"campaign:{campaign.pk}").enabled
    # Even if beat had fired with the old version, nothing is sent.
    assert campaign_dispatch(campaign_id=campaign.pk, version=1)["dispatched"] is False
    assert not OutboundMessage.objects.exists()


def test_an_approval_decided_after_the_campaign_changed_fails(
    world: dict[str, Any], marketer: Any, approver_user: Any
) -> None:
    policy(ActionType.CAMPAIGN_SEND)
    draft = _draft(world, marketer)
    held = campaign_send_approved(
        actor=act(marketer),
        campaign_id=draft["campaign_id"],
        base_version_token=draft["base_version_token"],
        idempotency_key=key(),
    )
    assert held["status"] == "pending_approval"
    campaign_update(
        actor=act(marketer),
        campaign_id=draft["campaign_id"],
        base_version_token=draft["base_version_token"],
        changes={"send_goal": "changed while pending"},
        idempotency_key=key(),
    )
    decided = action_request_approve(actor=act(approver_user), action_request_id=held["action_request_id"])
    assert decided["state"] == "failed" and decided["error"]["code"] == "stale_version_token"
    assert not OutboundMessage.objects.exists()


# --- schedule / send: never unreviewed, over cost, over quota, too soon -------------------------------


def test_schedule_refuses_unreviewed_over_budget_over_quota_and_too_soon(
    world: dict[str, Any], marketer: Any, approver_user: Any
) -> None:
    draft = _draft(world, marketer, budget="1.00")  # the estimate is 2.80
    later = (timezone.now() + timedelta(days=1)).isoformat()
    common = {"campaign_id": draft["campaign_id"], "base_version_token": draft["base_version_token"]}
    err = _refused(campaign_schedule, actor=act(marketer), schedule={"send_at": later}, idempotency_key=key(), **common)
    assert err.code == "over_budget"
    updated = campaign_update(actor=act(marketer), changes={"budget": "100"}, idempotency_key=key(), **common)["result"]
    common["base_version_token"] = updated["base_version_token"]
    err = _refused(campaign_schedule, actor=act(marketer), schedule={"send_at": later}, idempotency_key=key(), **common)
    assert (err.code, err.field) == ("campaign_not_approved", "confirm")
    soon = (timezone.now() + timedelta(minutes=1)).isoformat()
    err = _refused(
        campaign_schedule,
        actor=act(approver_user),
        schedule={"send_at": soon},
        confirm=True,
        idempotency_key=key(),
        **common,
    )
    assert (err.code, err.field) == ("send_time_too_soon", "send_at")
    Account.objects.update(balance=Decimal("1.00"))
    err = _refused(
        campaign_schedule,
        actor=act(approver_user),
        schedule={"send_at": later},
        confirm=True,
        idempotency_key=key(),
        **common,
    )
    assert err.code == "quota_exceeded" and err.details["within"] is False
    assert Campaign.objects.get(pk=draft["campaign_id"]).state == CampaignState.DRAFT


def test_sender_id_revoked_after_approval_fails_the_dispatch_and_sends_nothing(
    world: dict[str, Any], marketer: Any, approver_user: Any
) -> None:
    draft = _draft(world, marketer)
    campaign_schedule(
        actor=act(approver_user),
        campaign_id=draft["campaign_id"],
        base_version_token=draft["base_version_token"],
        schedule={"send_at": (timezone.now() + timedelta(hours=2)).isoformat()},
        confirm=True,
        idempotency_key=key(),
    )
    SenderId.objects.filter(value="#SHOPHK").update(status=SenderIdStatus.PENDING)
    outcome = campaign_dispatch(campaign_id=draft["campaign_id"], version=1)
    assert outcome["dispatched"] is False and outcome["error"]["code"] == "sender_id_not_usable"
    campaign = Campaign.objects.get(pk=draft["campaign_id"])
    assert campaign.state == CampaignState.FAILED and "sender_id_not_usable" in campaign.failure_reason
    assert not OutboundMessage.objects.exists() and not SendBatch.objects.exists()


def test_a_denied_landing_page_stops_the_send(world: dict[str, Any], marketer: Any, approver_user: Any) -> None:
    draft = _draft(world, marketer)
    config = platform_config_get()
    short_links = {**config["config"]["short_links"], "deny_domains": ["shop.example.com"]}
    platform_config_update(
        actor=Actor.system("test"),
        changes={"short_links": short_links},
        base_version_token=config["base_version_token"],
        idempotency_key=key(),
    )
    err = _refused(
        campaign_send_approved,
        actor=act(approver_user),
        campaign_id=draft["campaign_id"],
        base_version_token=draft["base_version_token"],
        confirm=True,
        idempotency_key=key(),
    )
    assert (err.code, err.field) == ("landing_page_inconsistent", "short_link_id")
    assert not OutboundMessage.objects.exists()


def test_opted_out_and_unconsented_contacts_never_get_a_message(
    world: dict[str, Any], marketer: Any, approver_user: Any
) -> None:
    draft = _draft(world, marketer)
    # Opted out after the draft, before the send: excluded at dispatch.
    opt_out_record(actor=Actor.system("t"), phone=PHONES["a"], reason="stop", source="sms")
    _send_confirmed(approver_user, draft)
    sent_to = set(OutboundMessage.objects.values_list("destination", flat=True))
    assert PHONES["a"] not in sent_to and PHONES["stopped"] not in sent_to
    assert sent_to == {PHONES["b"], PHONES["c"], PHONES["undelivered"]}


def test_dispatch_runs_once_even_if_beat_fires_twice(world: dict[str, Any], marketer: Any, approver_user: Any) -> None:
    draft = _draft(world, marketer)
    _send_confirmed(approver_user, draft)
    count = OutboundMessage.objects.count()
    again = campaign_dispatch(campaign_id=draft["campaign_id"], version=1)
    assert again["dispatched"] is False and OutboundMessage.objects.count() == count == 4


def test_quiet_hours_make_messages_wait_not_drop(world: dict[str, Any]) -> None:
    set_quiet_hours(HK_QUIET_HOURS)
    hk = ZoneInfo("Asia/Hong_Kong")
    night = datetime(2026, 12, 1, 23, 30, tzinfo=hk)
    assert quiet_release_time("HK", night) == datetime(2026, 12, 2, 9, 0, tzinfo=hk)
    day = datetime(2026, 12, 1, 11, 0, tzinfo=hk)
    assert quiet_release_time("HK", day) == day
    early = datetime(2026, 12, 1, 8, 0, tzinfo=hk)
    assert quiet_release_time("HK", early) == datetime(2026, 12, 1, 9, 0, tzinfo=hk)


def test_a_night_schedule_queues_messages_for_the_morning(
    world: dict[str, Any], marketer: Any, approver_user: Any
) -> None:
    set_quiet_hours(HK_QUIET_HOURS)
    draft = _draft(world, marketer)
    hk = ZoneInfo("Asia/Hong_Kong")
    night = (timezone.now() + timedelta(days=2)).astimezone(hk).replace(hour=23, minute=0, second=0, microsecond=0)
    out = campaign_schedule(
        actor=act(approver_user),
        campaign_id=draft["campaign_id"],
        base_version_token=draft["base_version_token"],
        schedule={"send_at": night.isoformat()},
        confirm=True,
        idempotency_key=key(),
    )
    assert out["result"]["quiet_hours"] == [{"country": "HK", "waits_until": (night + timedelta(hours=10)).isoformat()}]
    Campaign.objects.filter(pk=draft["campaign_id"]).update(send_at=night)
    campaign_dispatch(campaign_id=draft["campaign_id"], version=1)
    releases = set(OutboundMessage.objects.values_list("next_attempt_at", flat=True))
    assert releases == {night + timedelta(hours=10)}
    assert OutboundMessage.objects.filter(state=MessageState.QUEUED).count() == 4


# --- cancel: before sending cancels; after, stops what is left ----------------------------------------


def test_cancel_before_sending_records_reason_owner_and_affected(
    world: dict[str, Any], marketer: Any, approver_user: Any
) -> None:
    draft = _draft(world, marketer)
    campaign_schedule(
        actor=act(approver_user),
        campaign_id=draft["campaign_id"],
        base_version_token=draft["base_version_token"],
        schedule={"send_at": (timezone.now() + timedelta(days=1)).isoformat(), "notify": ["marketer1"]},
        confirm=True,
        idempotency_key=key(),
    )
    out = campaign_cancel_schedule(
        actor=act(marketer), campaign_id=draft["campaign_id"], reason="Offer withdrawn", idempotency_key=key()
    )
    result = out["result"]
    assert result["outcome"] == "cancelled_before_sending" and result["owner"] == "marketer1"
    assert result["affected_recipients"] == 4 and result["reason"] == "Offer withdrawn"
    assert not PeriodicTask.objects.filter(name=f"campaign:{draft['campaign_id']}").exists()
    assert campaign_dispatch(campaign_id=draft["campaign_id"], version=1)["dispatched"] is False
    err = _refused(
        campaign_cancel_schedule,
        actor=act(marketer),
        campaign_id=draft["campaign_id"],
        reason="x",
        idempotency_key=key(),
    )
    assert err.code == "campaign_not_cancellable"


def test_cancel_after_sending_started_stops_the_remaining_batches(
    world: dict[str, Any], marketer: Any, approver_user: Any
) -> None:
    draft = _draft(world, marketer)
    campaign_update(
        actor=act(marketer),
        campaign_id=draft["campaign_id"],
        base_version_token=draft["base_version_token"],
        changes={"batch_size": 1, "batch_interval_seconds": 3600},
        idempotency_key=key(),
    )
    token = campaign_get(actor=act(marketer), campaign_id=draft["campaign_id"])["base_version_token"]
    _send_confirmed(approver_user, {**draft, "base_version_token": token})
    batches_advance(budget_seconds=5)  # the first batch (one message) goes out
    assert campaign_progress(draft["campaign_id"])["delivered"] == 1
    out = campaign_cancel_schedule(
        actor=act(marketer), campaign_id=draft["campaign_id"], reason="Wrong price", idempotency_key=key()
    )["result"]
    assert out["outcome"] == "stopped_remaining_batches"
    assert out["withdrawn_messages"] == 3 and out["already_sent"] + out["progress"]["delivered"] >= 1
    assert Campaign.objects.get(pk=draft["campaign_id"]).state == CampaignState.PAUSED
    assert set(OutboundMessage.objects.filter(error_code="withdrawn").values_list("state", flat=True)) == {"failed"}
    # Withdrawn messages are not resendable.
    assert retry_preview(actor=act(marketer), campaign_id=draft["campaign_id"])["excluded"] == {"withdrawn": 3}


# --- retries: only eligible failures, and only from the preview ---------------------------------------


def test_retry_preview_excludes_and_resend_never_widens(
    world: dict[str, Any], marketer: Any, approver_user: Any
) -> None:
    draft = _draft(world, marketer)
    _send_confirmed(approver_user, draft)
    batches_advance(budget_seconds=5)
    # Fake failures of every kind on the delivered messages.
    by_phone = {m.destination: m for m in OutboundMessage.objects.all()}
    OutboundMessage.objects.filter(pk=by_phone[PHONES["a"]].pk).update(
        state="failed", error_code="invalid_destination", submitted_at=None
    )
    OutboundMessage.objects.filter(pk=by_phone[PHONES["b"]].pk).update(state="failed", error_code="001")
    preview = retry_preview(actor=act(marketer), campaign_id=draft["campaign_id"])
    assert preview["eligible"] == 2  # b (undelivered receipt) and the simulator's undelivered number
    assert preview["excluded"] == {"invalid_number": 1}
    # b opts out after the preview: the resend narrows, never widens.
    opt_out_record(actor=Actor.system("t"), phone=PHONES["b"], reason="stop", source="sms")
    out = failed_messages_resend(
        actor=act(marketer), retry_preview_id=preview["retry_preview_id"], idempotency_key=key()
    )
    assert out["result"]["resent"] == 1 and out["result"]["excluded_at_execution"] == {"opted_out": 1}
    resent = OutboundMessage.objects.get(resend_of__isnull=False)
    assert resent.destination == PHONES["undelivered"]
    err = _refused(failed_messages_resend, actor=act(marketer), retry_preview_id="not-a-preview", idempotency_key=key())
    assert (err.code, err.field) == ("validation_error", "retry_preview_id")


def test_large_resends_follow_the_policy(world: dict[str, Any], marketer: Any, approver_user: Any) -> None:
    policy(ActionType.MESSAGES_RESEND, Condition.RECIPIENTS_OVER, threshold_count=0)
    draft = _draft(world, marketer)
    _send_confirmed(approver_user, draft)
    batches_advance(budget_seconds=5)
    preview = retry_preview(actor=act(marketer), campaign_id=draft["campaign_id"])
    out = failed_messages_resend(
        actor=act(marketer), retry_preview_id=preview["retry_preview_id"], idempotency_key=key()
    )
    assert out["status"] == "pending_approval"
    assert not OutboundMessage.objects.filter(resend_of__isnull=False).exists()
    action_request_approve(actor=act(approver_user), action_request_id=out["action_request_id"])
    assert OutboundMessage.objects.filter(resend_of__isnull=False).count() == 1


# --- reads: visibility and masking ------------------------------------------------------------------


def test_campaigns_are_visible_to_their_owner_and_to_view_all_roles_only(
    world: dict[str, Any], marketer: Any, approver_user: Any, make_user: Any
) -> None:
    draft = _draft(world, marketer)
    other = make_user(Role.MARKETING, username="marketer2")
    assert campaigns_list(actor=act(other))["count"] == 0
    err = _refused(campaign_get, actor=act(other), campaign_id=draft["campaign_id"])
    assert err.code == "not_found"
    err = _refused(
        campaign_update,
        actor=act(other),
        campaign_id=draft["campaign_id"],
        base_version_token=draft["base_version_token"],
        changes={"send_goal": "x"},
        idempotency_key=key(),
    )
    assert err.code == "not_found"
    assert campaigns_list(actor=act(approver_user))["count"] == 1


def test_delivery_status_masks_phones_without_permission(
    world: dict[str, Any], marketer: Any, approver_user: Any, make_user: Any
) -> None:
    draft = _draft(world, marketer)
    _send_confirmed(approver_user, draft)
    batches_advance(budget_seconds=5)
    masked = delivery_status_get(actor=act(marketer), phone=PHONES["b"])
    assert masked["phones_masked"] is True and PHONES["b"] not in json.dumps(masked)
    (message,) = masked["messages"]
    assert message["state"] == "delivered" and message["provider_message_ids"]
    assert message["resend"] == {"eligible": False, "reason": "delivered"}


def test_every_campaign_write_is_audited(world: dict[str, Any], marketer: Any) -> None:
    from smsplatform.models import AuditLog

    draft = _draft(world, marketer)
    campaign_update(
        actor=act(marketer),
        campaign_id=draft["campaign_id"],
        base_version_token=draft["base_version_token"],
        changes={"review_notes": "Check the Chinese copy"},
        idempotency_key=key(),
    )
    actions = list(AuditLog.objects.filter(object_type="campaign").values_list("action", flat=True))
    assert actions.count("campaign.create") == 1 and actions.count("campaign.update") == 1
    assert ActionRequest.objects.count() == 0
