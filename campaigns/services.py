"""Campaign writes: create a draft, update named fields, schedule, send, cancel.

Every write is a governed action (compliance.governance): ``check`` runs every rule of
``campaigns.content.campaign_evaluate`` on live data and returns the facts the approval
policies look at; ``execute`` does the write. A live send or schedule needs either an
approval by someone else (the action request) or an explicit confirmation by an actor
holding ``campaigns.confirm_campaign``: a marketer can never send unreviewed.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from campaigns.content import Evaluation, budget_check, campaign_evaluate, quota_check
from campaigns.models import (
    APPROVED_STATES,
    SENT_STATES,
    Campaign,
    CampaignState,
    CampaignVersion,
)
from compliance.governance import GovernedAction, governed_write, register_action
from compliance.models import ActionRequest, ActionType
from smsplatform.config_service import platform_config_data
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.errors import ApplicationError, ErrorCode, not_found, permission_denied
from smsplatform.kernel.versioning import parse_version_token, stale_token_error, version_token

LABEL = "campaigns.campaign"
ADD = "campaigns.add_campaign"
CHANGE = "campaigns.change_campaign"
SCHEDULE = "campaigns.schedule_campaign"
SEND = "campaigns.send_campaign"
CONFIRM = "campaigns.confirm_campaign"
DISPATCH_TASK = "campaigns.dispatch_campaign"

# What a caller may set. Review, approval, opt-out and version data are not in this list.
CONTENT_FIELDS = (
    "name",
    "segment_id",
    "template_version_id",
    "text",
    "brand",
    "language",
    "max_segments",
    "variables",
    "short_link_id",
    "sender_id",
    "gateway",
    "tracking",
    "send_goal",
    "budget",
)
SCHEDULE_DRAFT_FIELDS = ("send_at", "time_zone", "batch_size", "batch_interval_seconds", "notify")
NOTE_FIELDS = ("review_notes",)
UPDATABLE = CONTENT_FIELDS + SCHEDULE_DRAFT_FIELDS + NOTE_FIELDS
PROTECTED = (
    "state",
    "version",
    "approved_version",
    "approved_by",
    "approved_at",
    "owner",
    "created_by",
    "opt_out",
    "unsubscribe",
)


def campaign_token(campaign: Campaign) -> str:
    return version_token(LABEL, campaign.pk, campaign.version)


def _error(code: str, message: str, *, field: str, hint: str, **details: Any) -> ApplicationError:
    return ApplicationError(code, message, field=field, hint=hint, details=details or None)


# Evaluations are expensive at a million contacts: check() computes one, execute() in the same
# thread and transaction reuses it instead of counting again.
_evaluations = threading.local()


def _remember(key: str, evaluation: Evaluation) -> None:
    _evaluations.items = {key: evaluation}


def _recall(key: str) -> Evaluation | None:
    items = getattr(_evaluations, "items", {})
    return items.pop(key, None)


def _key(actor: Actor, payload: dict[str, Any]) -> str:
    return f"{actor.user_id}:{json.dumps(payload, sort_keys=True, default=str)}"


# --- input normalisation ------------------------------------------------------------------


def _int_or_none(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _error(ErrorCode.VALIDATION_ERROR, f"{field} must be an integer.", field=field, hint="e.g. 12")
    return value


def _text(value: Any, field: str, *, max_chars: int, required: bool = False) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise _error(ErrorCode.VALIDATION_ERROR, f"{field} must be a string.", field=field, hint="Send text.")
    value = value.strip()
    if required and not value:
        raise _error(ErrorCode.VALIDATION_ERROR, f"{field} is required.", field=field, hint=f"Give a {field}.")
    if len(value) > max_chars:
        raise _error(
            ErrorCode.VALIDATION_ERROR, f"{field} is over {max_chars} characters.", field=field, hint="Shorten it."
        )
    return value


def _budget(value: Any) -> str | None:
    if value in (None, ""):
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise _error(ErrorCode.VALIDATION_ERROR, "budget must be a number.", field="budget", hint="e.g. 1500") from None
    if not amount.is_finite() or amount <= 0 or amount > Decimal("100000000"):
        raise _error(ErrorCode.VALIDATION_ERROR, "budget must be a positive amount.", field="budget", hint="e.g. 1500")
    return str(amount.quantize(Decimal("0.01")))


def spec_normalise(raw: dict[str, Any], *, partial: bool = False) -> dict[str, Any]:
    """Only the known content fields, each type-checked; unknown or protected ones are refused."""
    unknown = sorted(set(raw) - set(UPDATABLE))
    if unknown:
        name = unknown[0]
        hint = (
            "Review, approval, opt-out and version data are never set by an update."
            if name in PROTECTED
            else f"Updatable fields: {', '.join(UPDATABLE)}."
        )
        raise _error(ErrorCode.VALIDATION_ERROR, f"{name} cannot be set here.", field=name, hint=hint)
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "name":
            out[name] = _text(value, "name", max_chars=100, required=True)
        elif name in ("segment_id", "template_version_id", "short_link_id"):
            out[name] = _int_or_none(value, name)
        elif name == "max_segments":
            out[name] = _int_or_none(value, name)
            if out[name] is not None and not 1 <= out[name] <= 10:
                raise _error(
                    ErrorCode.VALIDATION_ERROR,
                    f"max_segments is {out[name]}; it must be from 1 to 10.",
                    field=name,
                    hint="Leave it empty for 3.",
                )
        elif name in ("text",):
            out[name] = value if value is None else _text(value, "text", max_chars=5000)
            if out[name] == "":
                out[name] = None
        elif name in ("brand",):
            out[name] = _text(value, "brand", max_chars=60)
        elif name == "language":
            if value not in ("en", "zh-hant", "bilingual"):
                raise _error(
                    ErrorCode.VALIDATION_ERROR,
                    "language must be en, zh-hant or bilingual.",
                    field="language",
                    hint="bilingual",
                )
            out[name] = value
        elif name == "variables":
            if value is None:
                value = {}
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise _error(
                    ErrorCode.VALIDATION_ERROR,
                    "variables must map field names to text values.",
                    field="variables",
                    hint='{"offer": "20% off"}',
                )
            out[name] = dict(value)
        elif name == "sender_id":
            out[name] = _text(value, "sender_id", max_chars=16, required=True)
        elif name == "gateway":
            out[name] = _text(value, "gateway", max_chars=50) or None
        elif name == "tracking":
            if not isinstance(value, bool):
                raise _error(ErrorCode.VALIDATION_ERROR, "tracking must be true or false.", field=name, hint="true")
            out[name] = value
        elif name == "send_goal":
            out[name] = _text(value, "send_goal", max_chars=300)
        elif name == "review_notes":
            out[name] = _text(value, "review_notes", max_chars=5000)
        elif name == "budget":
            out[name] = _budget(value)
        elif name in SCHEDULE_DRAFT_FIELDS:
            out.update(schedule_normalise({name: value}, partial=True))
    if not partial:
        for required in ("name", "segment_id", "sender_id"):
            if out.get(required) in (None, ""):
                raise _error(
                    ErrorCode.VALIDATION_ERROR, f"{required} is required.", field=required, hint=f"Give {required}."
                )
        out.setdefault("tracking", True)
    return out


def schedule_normalise(raw: dict[str, Any], *, partial: bool = False) -> dict[str, Any]:
    config = platform_config_data()["schedule"]
    out: dict[str, Any] = {}
    if "time_zone" in raw or not partial:
        tz_name = raw.get("time_zone") or config["time_zone"]
        try:
            ZoneInfo(str(tz_name))
        except Exception:
            raise _error(
                ErrorCode.VALIDATION_ERROR,
                f"Unknown time zone {tz_name!r}.",
                field="time_zone",
                hint="An IANA name such as Asia/Hong_Kong.",
            ) from None
        out["time_zone"] = str(tz_name)
    if "send_at" in raw or not partial:
        value = raw.get("send_at")
        if value in (None, "") and partial:
            out["send_at"] = None
        else:
            parsed = parse_datetime(str(value)) if isinstance(value, str) else None
            if parsed is None:
                raise _error(
                    ErrorCode.VALIDATION_ERROR,
                    "send_at must be an ISO 8601 date and time.",
                    field="send_at",
                    hint="e.g. 2026-12-01T10:00:00+08:00 (without an offset, time_zone applies).",
                )
            if timezone.is_naive(parsed):
                parsed = parsed.replace(tzinfo=ZoneInfo(out.get("time_zone") or config["time_zone"]))
            out["send_at"] = parsed.isoformat()
    for name, default, low, high in (
        ("batch_size", config["default_batch_size"], 1, 1_000_000),
        ("batch_interval_seconds", config["default_batch_interval_seconds"], 0, 86_400),
    ):
        if name in raw or not partial:
            value = raw.get(name, default)
            if value is None:
                value = default
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise _error(
                    ErrorCode.VALIDATION_ERROR,
                    f"{name} must be an integer from {low} to {high}.",
                    field=name,
                    hint=f"Default {default}.",
                )
            out[name] = value
    if "notify" in raw or not partial:
        notify = raw.get("notify") or []
        if not isinstance(notify, list) or len(notify) > 20 or not all(isinstance(n, str) for n in notify):
            raise _error(
                ErrorCode.VALIDATION_ERROR,
                "notify must be a list of at most 20 usernames or e-mail addresses.",
                field="notify",
                hint='["approver@example.com"]',
            )
        out["notify"] = [n.strip()[:200] for n in notify if n.strip()]
    return out


# --- reading a campaign back into a spec ------------------------------------------------------


def campaign_spec(campaign: Campaign) -> dict[str, Any]:
    return {
        "name": campaign.name,
        "segment_id": campaign.segment_id,
        "template_version_id": campaign.template_version_id,
        "text": campaign.text or None,
        "max_segments": campaign.max_segments,
        "brand": campaign.brand,
        "language": campaign.language,
        "variables": campaign.variables,
        "short_link_id": campaign.short_link_id,
        "sender_id": campaign.sender_id,
        "gateway": campaign.gateway.code if campaign.gateway else None,
        "tracking": campaign.tracking,
        "send_goal": campaign.send_goal,
        "budget": str(campaign.budget) if campaign.budget is not None else None,
    }


def campaign_snapshot(campaign: Campaign) -> dict[str, Any]:
    return {
        **campaign_spec(campaign),
        "review_notes": campaign.review_notes,
        "send_at": campaign.send_at.isoformat() if campaign.send_at else None,
        "time_zone": campaign.time_zone,
        "batch_size": campaign.batch_size,
        "batch_interval_seconds": campaign.batch_interval_seconds,
        "notify": campaign.notify,
        "body_preview": campaign.body_preview,
        "encoding": campaign.encoding,
        "segments_per_message": campaign.segments_per_message,
    }


def campaign_for_update(campaign_id: Any, *, lock: bool = False) -> Campaign:
    if isinstance(campaign_id, bool) or not isinstance(campaign_id, int):
        raise _error(
            ErrorCode.VALIDATION_ERROR,
            "campaign_id must be an integer.",
            field="campaign_id",
            hint="See campaigns.list.",
        )
    qs = Campaign.objects.select_related("gateway", "segment", "short_link")
    if lock:
        qs = qs.select_for_update(of=("self",))
    campaign = qs.filter(pk=campaign_id).first()
    if campaign is None:
        raise not_found("campaign", campaign_id, field="campaign_id", hint="See sms_marketing.campaigns.list.")
    return campaign


def campaign_visible(actor: Actor, campaign: Campaign) -> bool:
    from campaigns.selectors import campaigns_visible

    return campaigns_visible(actor).filter(pk=campaign.pk).exists()


def _visible_or_404(actor: Actor, campaign: Campaign) -> None:
    if actor.user_id is not None and not campaign_visible(actor, campaign):
        raise not_found("campaign", campaign.pk, field="campaign_id", hint="See sms_marketing.campaigns.list.")


def _check_token(campaign: Campaign, token: Any) -> None:
    version = parse_version_token(token, label=LABEL, pk=campaign.pk)
    if version != campaign.version:
        raise stale_token_error(label=LABEL, pk=campaign.pk, current_version=campaign.version)


def _apply_evaluation(campaign: Campaign, evaluation: Evaluation) -> None:
    campaign.body_preview = evaluation.body_preview
    campaign.encoding = evaluation.encoding
    campaign.segments_per_message = evaluation.segments
    campaign.estimate = {
        "at": timezone.now().isoformat(),
        "recipients": evaluation.recipients,
        "matched": evaluation.counts["matched"],
        "exclusions": evaluation.counts["exclusions"],
        "cost": {k: str(v) for k, v in evaluation.cost.items()},
        "by_country": evaluation.by_country,
    }


def _version_row(actor: Actor, campaign: Campaign, changed: list[str], reason: str) -> None:
    CampaignVersion.objects.create(
        campaign=campaign,
        version=campaign.version,
        data=json.loads(json.dumps(campaign_snapshot(campaign), default=str)),
        changed_fields=changed,
        reason=reason,
        created_by=actor.user,
    )


def _set_fields(campaign: Campaign, spec: dict[str, Any]) -> None:
    from gateways.models import Gateway

    for name, value in spec.items():
        if name == "gateway":
            campaign.gateway = Gateway.objects.get(code=value) if value else None
        elif name == "text":
            campaign.text = value or ""
        elif name == "budget":
            campaign.budget = Decimal(value) if value is not None else None
        elif name == "send_at":
            campaign.send_at = datetime.fromisoformat(value) if value else None
        else:
            setattr(campaign, name, value)


def _result(campaign: Campaign, evaluation: Evaluation | None = None, **extra: Any) -> dict[str, Any]:
    out = {
        "campaign_id": campaign.pk,
        "name": campaign.name,
        "state": campaign.state,
        "version": campaign.version,
        "base_version_token": campaign_token(campaign),
        "body_preview": campaign.body_preview,
        "encoding": campaign.encoding,
        "segments_per_message": campaign.segments_per_message,
    }
    if evaluation is not None:
        out.update(
            recipients=evaluation.recipients,
            estimated_cost={k: str(v) for k, v in evaluation.cost.items()},
            warnings=evaluation.warnings,
        )
    out.update(extra)
    return out


# --- campaigns.create_draft ---------------------------------------------------------------------


def _create_check(actor: Actor, payload: dict[str, Any]) -> dict[str, Any]:
    spec = payload["spec"]
    evaluation = campaign_evaluate(actor, spec)
    _remember(_key(actor, payload), evaluation)
    return evaluation.facts()


def _create_execute(actor: Actor, payload: dict[str, Any], request: ActionRequest | None) -> dict[str, Any]:
    spec = payload["spec"]
    evaluation = _recall(_key(actor, payload)) or campaign_evaluate(actor, spec)
    schedule = schedule_normalise(dict(payload.get("schedule", {}).items()), partial=True)
    campaign = Campaign(owner=actor.user, created_by=actor.user)
    config = platform_config_data()["schedule"]
    campaign.time_zone = config["time_zone"]
    campaign.batch_size = config["default_batch_size"]
    campaign.batch_interval_seconds = config["default_batch_interval_seconds"]
    _set_fields(campaign, {**spec, **schedule})
    _apply_evaluation(campaign, evaluation)
    campaign.save()
    if evaluation.link is not None and evaluation.link.campaign_id is None:
        type(evaluation.link).objects.filter(pk=evaluation.link.pk, campaign_id__isnull=True).update(
            campaign_id=campaign.pk
        )
    _version_row(actor, campaign, sorted(spec), payload.get("reason", ""))
    audit_record(
        actor=actor,
        action="campaign.create",
        object_type="campaign",
        object_id=campaign.pk,
        after={**campaign_spec(campaign), **evaluation.facts()},
        reason=payload.get("reason", ""),
        action_request_id=request.pk if request else None,
    )
    return _result(campaign, evaluation)


register_action(
    GovernedAction(
        action=ActionType.CAMPAIGN_CREATE,
        permission=ADD,
        check=_create_check,
        execute=_create_execute,
        summary=lambda payload, facts: (
            f"Create campaign draft {payload['spec'].get('name')!r}: {facts.get('recipients')} recipients, "
            f"cost {facts.get('cost')}"
        ),
    )
)


def campaign_create_draft(
    *, actor: Actor, data: dict[str, Any], idempotency_key: str | None, reason: str = ""
) -> dict[str, Any]:
    if not actor.has_perm(ADD):
        raise permission_denied(ADD)
    if not isinstance(data, dict):
        raise _error(ErrorCode.VALIDATION_ERROR, "The draft must be an object.", field="", hint="See the schema.")
    schedule = {k: data[k] for k in SCHEDULE_DRAFT_FIELDS if k in data}
    spec = spec_normalise({k: v for k, v in data.items() if k not in SCHEDULE_DRAFT_FIELDS})
    schedule = schedule_normalise(schedule, partial=True)
    return governed_write(
        actor=actor,
        action=ActionType.CAMPAIGN_CREATE,
        payload={"spec": spec, "schedule": schedule, "reason": reason},
        idempotency_key=idempotency_key,
        reason=reason,
    )


# --- campaigns.update ------------------------------------------------------------------------------


def _update_check(actor: Actor, payload: dict[str, Any]) -> dict[str, Any]:
    campaign = campaign_for_update(payload["campaign_id"])
    _visible_or_404(actor, campaign)
    _check_token(campaign, payload["base_version_token"])
    if campaign.state in SENT_STATES or campaign.state == CampaignState.CANCELLED:
        raise _error(
            "campaign_not_editable",
            f"Campaign {campaign.pk} is {campaign.state}; its content can no longer change.",
            field="campaign_id",
            hint="Create a new campaign (or resend failed messages with failed_messages.retry_preview).",
        )
    changes = payload["changes"]
    content_changed = any(k in CONTENT_FIELDS for k in changes)
    facts: dict[str, Any] = {"overwrites_existing": campaign.state in APPROVED_STATES, "changed": sorted(changes)}
    if content_changed:
        spec = {**campaign_spec(campaign), **{k: v for k, v in changes.items() if k in CONTENT_FIELDS}}
        send_at = changes.get("send_at", campaign.send_at.isoformat() if campaign.send_at else None)
        evaluation = campaign_evaluate(
            actor, spec, campaign_id=campaign.pk, send_at=datetime.fromisoformat(send_at) if send_at else None
        )
        _remember(_key(actor, payload), evaluation)
        facts.update(evaluation.facts())
    return facts


def _unschedule(campaign: Campaign) -> None:
    from django_celery_beat.models import PeriodicTask

    if campaign.beat_task_name:
        PeriodicTask.objects.filter(name=campaign.beat_task_name).update(enabled=False)


def _update_execute(actor: Actor, payload: dict[str, Any], request: ActionRequest | None) -> dict[str, Any]:
    campaign = campaign_for_update(payload["campaign_id"], lock=True)
    _check_token(campaign, payload["base_version_token"])
    changes = payload["changes"]
    before = campaign_snapshot(campaign)
    evaluation = None
    if any(k in CONTENT_FIELDS for k in changes):
        evaluation = _recall(_key(actor, payload))
        if evaluation is None:
            spec = {**campaign_spec(campaign), **{k: v for k, v in changes.items() if k in CONTENT_FIELDS}}
            evaluation = campaign_evaluate(actor, spec, campaign_id=campaign.pk)
    _set_fields(campaign, changes)
    if evaluation is not None:
        _apply_evaluation(campaign, evaluation)
    reviewed_fields = [k for k in changes if k not in NOTE_FIELDS]
    note = ""
    if campaign.state in APPROVED_STATES and reviewed_fields:
        if request is not None:
            # The change itself was approved: the approval now covers the new version.
            campaign.approved_version = campaign.version + 1
            campaign.approved_at = timezone.now()
            campaign.approved_by_id = request.decided_by_id
            campaign.approval_request_id = request.pk
            note = "The approved change keeps the campaign approved."
            if campaign.state == CampaignState.SCHEDULED:
                _reschedule(campaign, version=campaign.version + 1)
        else:
            _unschedule(campaign)
            campaign.state = CampaignState.DRAFT
            campaign.approved_version = None
            campaign.approved_at = None
            campaign.approved_by = None
            note = "The campaign was approved or scheduled; the change sent it back to draft for approval."
    elif campaign.state in (CampaignState.PENDING_APPROVAL, CampaignState.FAILED) and reviewed_fields:
        campaign.state = CampaignState.DRAFT
        note = "A pending request for the old version will fail when decided; request again."
    campaign.version += 1
    campaign.updated_at = timezone.now()
    campaign.save()
    _version_row(actor, campaign, sorted(changes), payload.get("reason", ""))
    audit_record(
        actor=actor,
        action="campaign.update",
        object_type="campaign",
        object_id=campaign.pk,
        before={k: before.get(k) for k in changes},
        after={k: campaign_snapshot(campaign).get(k) for k in changes},
        reason=payload.get("reason", ""),
        action_request_id=request.pk if request else None,
    )
    return _result(campaign, evaluation, changed=sorted(changes), note=note)


register_action(
    GovernedAction(
        action=ActionType.CAMPAIGN_UPDATE,
        permission=CHANGE,
        check=_update_check,
        execute=_update_execute,
        summary=lambda payload, facts: (
            f"Update campaign #{payload['campaign_id']}: {', '.join(facts.get('changed', []))}"
            + (" (approved/scheduled)" if facts.get("overwrites_existing") else "")
        ),
    )
)


def campaign_update(
    *,
    actor: Actor,
    campaign_id: Any,
    base_version_token: Any,
    changes: dict[str, Any],
    idempotency_key: str | None,
    reason: str = "",
) -> dict[str, Any]:
    if not actor.has_perm(CHANGE):
        raise permission_denied(CHANGE)
    if not isinstance(changes, dict) or not changes:
        raise _error(
            ErrorCode.VALIDATION_ERROR,
            "changes must name at least one field.",
            field="changes",
            hint="Only the fields you name are changed.",
        )
    normalised = spec_normalise(changes, partial=True)
    campaign = campaign_for_update(campaign_id)
    _visible_or_404(actor, campaign)
    _check_token(campaign, base_version_token)
    return governed_write(
        actor=actor,
        action=ActionType.CAMPAIGN_UPDATE,
        payload={
            "campaign_id": campaign.pk,
            "base_version_token": str(base_version_token),
            "changes": normalised,
            "reason": reason,
        },
        idempotency_key=idempotency_key,
        reason=reason,
    )


# --- live sends: the confirmation rule ---------------------------------------------------------


def _reviewer(actor: Actor, payload: dict[str, Any], request: ActionRequest | None) -> int | None:
    """Approval by someone else, or explicit confirmation by a holder of confirm_campaign."""
    if request is not None:
        return request.decided_by_id
    if payload.get("confirm") is True and actor.has_perm(CONFIRM):
        return actor.user_id
    raise _error(
        "campaign_not_approved",
        "A live send needs an approval (no approval policy held this request) or an explicit confirmation.",
        field="confirm",
        hint=(
            "Ask an approver: set an approval policy for this action, or have a user holding "
            "campaigns.confirm_campaign send it with confirm=true."
        ),
    )


def _live_check(actor: Actor, payload: dict[str, Any], *, send_at: datetime | None) -> tuple[Campaign, Evaluation]:
    campaign = campaign_for_update(payload["campaign_id"])
    _visible_or_404(actor, campaign)
    _check_token(campaign, payload["base_version_token"])
    allowed = (CampaignState.DRAFT, CampaignState.PENDING_APPROVAL, CampaignState.APPROVED, CampaignState.SCHEDULED)
    if campaign.state not in allowed:
        raise _error(
            "campaign_state",
            f"Campaign {campaign.pk} is {campaign.state}.",
            field="campaign_id",
            hint="Only draft, approved or scheduled campaigns can be scheduled or sent.",
        )
    evaluation = campaign_evaluate(actor, campaign_spec(campaign), campaign_id=campaign.pk, send_at=send_at)
    if evaluation.body_preview != campaign.body_preview:
        raise _error(
            "campaign_content_changed",
            "The message would differ from the reviewed draft (a template, link or rule changed).",
            field="campaign_id",
            hint="Read the campaign again (campaigns.get) and update it so the draft shows what will go out.",
        )
    budget_check(evaluation, budget=campaign.budget)
    quota = quota_check(evaluation)
    if not quota["within"]:
        raise _error(
            "quota_exceeded",
            f"The campaign needs {quota['segments_needed']} segments / {quota['amount_needed']}; available "
            f"{quota['available_segments']} segments / {quota['available_amount']}.",
            field="campaign_id",
            hint="Top up, raise the quota or narrow the segment (sms_marketing.quotas.get).",
            **quota,
        )
    return campaign, evaluation


def _mark_pending(result: dict[str, Any], campaign_id: int) -> dict[str, Any]:
    if result.get("status") == "pending_approval":
        Campaign.objects.filter(pk=campaign_id, state__in=[CampaignState.DRAFT, CampaignState.FAILED]).update(
            state=CampaignState.PENDING_APPROVAL, approval_request_id=result["action_request_id"]
        )
    return result


# --- campaigns.schedule -------------------------------------------------------------------------


def _schedule_check(actor: Actor, payload: dict[str, Any]) -> dict[str, Any]:
    send_at = datetime.fromisoformat(payload["schedule"]["send_at"])
    if send_at <= timezone.now():
        raise _error(
            "send_time_passed",
            f"send_at {send_at.isoformat()} has passed.",
            field="send_at",
            hint="Schedule again with a later time, or send now with campaigns.send_approved.",
        )
    _campaign, evaluation = _live_check(actor, payload, send_at=send_at)
    _remember(_key(actor, payload), evaluation)
    return {**evaluation.facts(), "send_at": send_at.isoformat()}


def _reschedule(campaign: Campaign, *, version: int) -> None:
    from django_celery_beat.models import ClockedSchedule, PeriodicTask

    assert campaign.send_at is not None
    clock, _ = ClockedSchedule.objects.get_or_create(clocked_time=campaign.send_at)
    name = f"campaign:{campaign.pk}"
    PeriodicTask.objects.update_or_create(
        name=name,
        defaults={
            "task": DISPATCH_TASK,
            "clocked": clock,
            "interval": None,
            "crontab": None,
            "one_off": True,
            "enabled": True,
            "args": json.dumps([campaign.pk, version]),
            "description": f"Send campaign {campaign.name!r} version {version}",
        },
    )
    campaign.beat_task_name = name


def _schedule_execute(actor: Actor, payload: dict[str, Any], request: ActionRequest | None) -> dict[str, Any]:
    campaign = campaign_for_update(payload["campaign_id"], lock=True)
    _check_token(campaign, payload["base_version_token"])
    reviewer = _reviewer(actor, payload, request)
    evaluation = _recall(_key(actor, payload))
    schedule = payload["schedule"]
    _set_fields(campaign, schedule)
    campaign.state = CampaignState.SCHEDULED
    campaign.approved_version = campaign.version
    campaign.approved_by_id = reviewer
    campaign.approved_at = timezone.now()
    campaign.approval_request_id = request.pk if request else None
    _reschedule(campaign, version=campaign.version)
    campaign.updated_at = timezone.now()
    campaign.save()
    audit_record(
        actor=actor,
        action="campaign.schedule",
        object_type="campaign",
        object_id=campaign.pk,
        after={**schedule, "version": campaign.version, **(evaluation.facts() if evaluation else {})},
        reason=payload.get("reason", ""),
        action_request_id=request.pk if request else None,
    )
    quiet = _quiet_note(campaign, evaluation)
    return _result(
        campaign,
        evaluation,
        send_at=campaign.send_at.isoformat() if campaign.send_at else None,
        time_zone=campaign.time_zone,
        batch_size=campaign.batch_size,
        batch_interval_seconds=campaign.batch_interval_seconds,
        notify=campaign.notify,
        quiet_hours=quiet,
        approved_by=reviewer,
    )


def _quiet_note(campaign: Campaign, evaluation: Evaluation | None) -> list[dict[str, Any]]:
    from campaigns.dispatch import quiet_release_time

    if campaign.send_at is None or evaluation is None:
        return []
    out = []
    for country in evaluation.quotes:
        release = quiet_release_time(country, campaign.send_at)
        if release != campaign.send_at:
            out.append({"country": country, "waits_until": release.isoformat()})
    return out


register_action(
    GovernedAction(
        action=ActionType.CAMPAIGN_SCHEDULE,
        permission=SCHEDULE,
        check=_schedule_check,
        execute=_schedule_execute,
        summary=lambda payload, facts: (
            f"Schedule campaign #{payload['campaign_id']} for {facts.get('send_at')}: "
            f"{facts.get('recipients')} recipients, cost {facts.get('cost')}"
        ),
    )
)


def campaign_schedule(
    *,
    actor: Actor,
    campaign_id: Any,
    base_version_token: Any,
    schedule: dict[str, Any],
    confirm: bool = False,
    idempotency_key: str | None,
    reason: str = "",
) -> dict[str, Any]:
    if not actor.has_perm(SCHEDULE):
        raise permission_denied(SCHEDULE)
    campaign = campaign_for_update(campaign_id)
    _visible_or_404(actor, campaign)
    merged = {
        "send_at": campaign.send_at.isoformat() if campaign.send_at else None,
        "time_zone": campaign.time_zone,
        "batch_size": campaign.batch_size,
        "batch_interval_seconds": campaign.batch_interval_seconds,
        "notify": campaign.notify,
        **dict((schedule or {}).items()),
    }
    if merged.get("send_at") is None:
        raise _error(ErrorCode.VALIDATION_ERROR, "send_at is required.", field="send_at", hint="ISO 8601 date-time.")
    normalised = schedule_normalise(merged)
    lead = timedelta(minutes=int(platform_config_data()["schedule"]["min_lead_minutes"]))
    if datetime.fromisoformat(normalised["send_at"]) < timezone.now() + lead:
        raise _error(
            "send_time_too_soon",
            f"send_at must be at least {lead} ahead (schedule.min_lead_minutes).",
            field="send_at",
            hint="Pick a later time, or send now with campaigns.send_approved.",
        )
    result = governed_write(
        actor=actor,
        action=ActionType.CAMPAIGN_SCHEDULE,
        payload={
            "campaign_id": campaign.pk,
            # A missing token stays empty (version_token_required), not the text "None".
            "base_version_token": str(base_version_token or ""),
            "schedule": normalised,
            "confirm": bool(confirm),
            "reason": reason,
        },
        idempotency_key=idempotency_key,
        reason=reason,
    )
    return _mark_pending(result, campaign.pk)


# --- campaigns.send_approved ---------------------------------------------------------------------


def _send_check(actor: Actor, payload: dict[str, Any]) -> dict[str, Any]:
    _campaign, evaluation = _live_check(actor, payload, send_at=None)
    _remember(_key(actor, payload), evaluation)
    return evaluation.facts()


def _send_execute(actor: Actor, payload: dict[str, Any], request: ActionRequest | None) -> dict[str, Any]:
    from campaigns.tasks import dispatch_campaign

    campaign = campaign_for_update(payload["campaign_id"], lock=True)
    _check_token(campaign, payload["base_version_token"])
    reviewer = _reviewer(actor, payload, request)
    evaluation = _recall(_key(actor, payload))
    _unschedule(campaign)
    campaign.state = CampaignState.APPROVED
    campaign.approved_version = campaign.version
    campaign.approved_by_id = reviewer
    campaign.approved_at = timezone.now()
    campaign.approval_request_id = request.pk if request else None
    campaign.updated_at = timezone.now()
    campaign.save()
    audit_record(
        actor=actor,
        action="campaign.send",
        object_type="campaign",
        object_id=campaign.pk,
        after={"version": campaign.version, **(evaluation.facts() if evaluation else {})},
        reason=payload.get("reason", ""),
        action_request_id=request.pk if request else None,
    )
    campaign_id, version = campaign.pk, campaign.version
    transaction.on_commit(lambda: dispatch_campaign.delay(campaign_id, version))
    return _result(
        campaign, evaluation, approved_by=reviewer, note="Dispatch queued; follow it with send_batches.list."
    )


register_action(
    GovernedAction(
        action=ActionType.CAMPAIGN_SEND,
        permission=SEND,
        check=_send_check,
        execute=_send_execute,
        summary=lambda payload, facts: (
            f"Send campaign #{payload['campaign_id']} now: {facts.get('recipients')} recipients, "
            f"cost {facts.get('cost')}"
        ),
    )
)


def campaign_send_approved(
    *,
    actor: Actor,
    campaign_id: Any,
    base_version_token: Any,
    confirm: bool = False,
    idempotency_key: str | None,
    reason: str = "",
) -> dict[str, Any]:
    if not actor.has_perm(SEND):
        raise permission_denied(SEND)
    campaign = campaign_for_update(campaign_id)
    _visible_or_404(actor, campaign)
    result = governed_write(
        actor=actor,
        action=ActionType.CAMPAIGN_SEND,
        payload={
            "campaign_id": campaign.pk,
            # A missing token stays empty (version_token_required), not the text "None".
            "base_version_token": str(base_version_token or ""),
            "confirm": bool(confirm),
            "reason": reason,
        },
        idempotency_key=idempotency_key,
        reason=reason,
    )
    return _mark_pending(result, campaign.pk)


# --- campaigns.cancel_schedule ---------------------------------------------------------------------

CANCELLABLE = (
    CampaignState.PENDING_APPROVAL,
    CampaignState.APPROVED,
    CampaignState.SCHEDULED,
    CampaignState.SENDING,
)


def _affected(campaign: Campaign) -> int:
    from gateways.models import MessageState, OutboundMessage

    if campaign.state == CampaignState.SENDING:
        return OutboundMessage.objects.filter(batch__campaign=campaign, state=MessageState.QUEUED).count()
    return int(campaign.segment.sendable_count)


def _cancel_check(actor: Actor, payload: dict[str, Any]) -> dict[str, Any]:
    campaign = campaign_for_update(payload["campaign_id"])
    _visible_or_404(actor, campaign)
    if campaign.state not in CANCELLABLE:
        raise _error(
            "campaign_not_cancellable",
            f"Campaign {campaign.pk} is {campaign.state}; there is no schedule or send to cancel.",
            field="campaign_id",
            hint="Only pending, approved, scheduled or sending campaigns can be cancelled or stopped.",
        )
    affected = _affected(campaign)
    lead = (campaign.send_at - timezone.now()).total_seconds() / 60 if campaign.send_at else None
    return {"recipients": affected, "minutes_to_send": lead, "started": campaign.state == CampaignState.SENDING}


def _notify(campaign: Campaign, subject: str, body: str) -> dict[str, Any]:
    from campaigns.notifications import campaign_notify

    return campaign_notify(campaign, subject=subject, body=body)


def _cancel_execute(actor: Actor, payload: dict[str, Any], request: ActionRequest | None) -> dict[str, Any]:
    from campaigns.dispatch import campaign_stop

    campaign = campaign_for_update(payload["campaign_id"], lock=True)
    if campaign.state not in CANCELLABLE:
        raise _error(
            "campaign_not_cancellable",
            f"Campaign {campaign.pk} is {campaign.state}.",
            field="campaign_id",
            hint="Nothing left to cancel.",
        )
    reason = payload["reason"]
    owner = campaign.owner.get_username()
    if campaign.state == CampaignState.SENDING:
        stopped = campaign_stop(actor=actor, campaign=campaign, reason=reason)
        notified = _notify(campaign, f"Campaign {campaign.name} stopped", f"Remaining batches stopped: {reason}")
        audit_record(
            actor=actor,
            action="campaign.stop",
            object_type="campaign",
            object_id=campaign.pk,
            after={**stopped, "notification": notified},
            reason=reason,
            action_request_id=request.pk if request else None,
        )
        return {
            "campaign_id": campaign.pk,
            "state": CampaignState.PAUSED,
            "outcome": "stopped_remaining_batches",
            "reason": reason,
            "owner": owner,
            **stopped,
            "notification": notified,
            "note": "Sending had started: what was sent stays sent; the unsent messages were withdrawn. "
            "Send a follow-up notice if the content sent needs correcting.",
        }
    affected = _affected(campaign)
    before = campaign.state
    _unschedule(campaign)
    campaign.state = CampaignState.CANCELLED
    campaign.cancelled_at = timezone.now()
    campaign.cancel_reason = reason
    campaign.updated_at = timezone.now()
    campaign.save()
    notified = _notify(campaign, f"Campaign {campaign.name} cancelled", f"Cancelled before sending: {reason}")
    audit_record(
        actor=actor,
        action="campaign.cancel_schedule",
        object_type="campaign",
        object_id=campaign.pk,
        before={"state": before},
        after={"state": campaign.state, "affected": affected, "notification": notified},
        reason=reason,
        action_request_id=request.pk if request else None,
    )
    return {
        "campaign_id": campaign.pk,
        "state": campaign.state,
        "outcome": "cancelled_before_sending",
        "reason": reason,
        "owner": owner,
        "affected_recipients": affected,
        "notification": notified,
    }


register_action(
    GovernedAction(
        action=ActionType.CAMPAIGN_CANCEL,
        permission=SCHEDULE,
        check=_cancel_check,
        execute=_cancel_execute,
        summary=lambda payload, facts: (
            f"{'Stop' if facts.get('started') else 'Cancel'} campaign #{payload['campaign_id']}: "
            f"{facts.get('recipients')} recipients affected"
        ),
    )
)


def campaign_cancel_schedule(
    *, actor: Actor, campaign_id: Any, reason: Any, idempotency_key: str | None
) -> dict[str, Any]:
    if not actor.has_perm(SCHEDULE):
        raise permission_denied(SCHEDULE)
    reason = _text(reason, "reason", max_chars=1000, required=True)
    campaign = campaign_for_update(campaign_id)
    _visible_or_404(actor, campaign)
    return governed_write(
        actor=actor,
        action=ActionType.CAMPAIGN_CANCEL,
        payload={"campaign_id": campaign.pk, "reason": reason},
        idempotency_key=idempotency_key,
        reason=reason,
    )
