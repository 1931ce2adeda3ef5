"""campaigns.create_draft: a new draft, every rule of ``campaign_evaluate`` checked on live data."""

from __future__ import annotations

from typing import Any

from campaigns.content import Evaluation, campaign_evaluate
from campaigns.models import Campaign
from campaigns.quiet_hours import quiet_hours_notices
from campaigns.services.common import (
    ADD,
    campaign_evaluation_apply,
    campaign_fields_set,
    campaign_link_claim,
    campaign_result,
    campaign_version_record,
)
from campaigns.spec import SCHEDULE_DRAFT_FIELDS, campaign_error, campaign_spec, schedule_normalise, spec_normalise
from compliance.governance import Checked, GovernedAction, governed_write, register_action
from compliance.models import ActionRequest, ActionType
from smsplatform.config_service import platform_config_data
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.errors import ErrorCode, permission_denied
from smsplatform.kernel.money import money_text


def _create_check(actor: Actor, payload: dict[str, Any]) -> Checked:
    evaluation = campaign_evaluate(actor, payload["spec"])
    # The evaluation is expensive at a million contacts: execute() reuses it.
    return Checked(facts=evaluation.facts(), context=evaluation)


def _create_execute(
    actor: Actor, payload: dict[str, Any], request: ActionRequest | None, context: Any
) -> dict[str, Any]:
    spec = payload["spec"]
    evaluation: Evaluation = context
    schedule = schedule_normalise(dict(payload.get("schedule", {}).items()), partial=True)
    campaign = Campaign(owner=actor.user, created_by=actor.user)
    config = platform_config_data()["schedule"]
    campaign.time_zone = config["time_zone"]
    campaign.batch_size = config["default_batch_size"]
    campaign.batch_interval_seconds = config["default_batch_interval_seconds"]
    campaign_fields_set(campaign, {**spec, **schedule})
    campaign_evaluation_apply(campaign, evaluation)
    campaign.save()
    campaign_link_claim(campaign, evaluation)
    campaign_version_record(actor, campaign, sorted(spec), payload.get("reason", ""))
    audit_record(
        actor=actor,
        action="campaign.create",
        object_type="campaign",
        object_id=campaign.pk,
        after={**campaign_spec(campaign), **evaluation.facts()},
        reason=payload.get("reason", ""),
        action_request_id=request.pk if request else None,
    )
    return campaign_result(campaign, evaluation, notices=quiet_hours_notices(evaluation.quotes, campaign.send_at))


register_action(
    GovernedAction(
        action=ActionType.CAMPAIGN_CREATE,
        permission=ADD,
        check=_create_check,
        execute=_create_execute,
        summary=lambda payload, facts: (
            f"Create campaign draft {payload['spec'].get('name')!r}: {facts.get('recipients')} recipients, "
            f"cost {money_text(facts.get('cost'), facts.get('currency'))}"
        ),
    )
)


def campaign_create_draft(
    *, actor: Actor, data: dict[str, Any], idempotency_key: str | None, reason: str = ""
) -> dict[str, Any]:
    if not actor.has_perm(ADD):
        raise permission_denied(ADD)
    if not isinstance(data, dict):
        raise campaign_error(
            ErrorCode.VALIDATION_ERROR, "The draft must be an object.", field="", hint="See the schema."
        )
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
