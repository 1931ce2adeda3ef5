"""Which campaigns an actor may see, and the one permission-scoped fetch of a campaign.

Visibility: a user sees the campaigns they own or created; ``campaigns.view_all_campaigns``
(approvers, compliance, operations) sees all. A campaign outside that set is reported as
not found, so its name, offer and audience do not leak.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from campaigns.models import Campaign
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.errors import ApplicationError, ErrorCode, not_found, permission_denied

VIEW = "campaigns.view_campaign"
VIEW_ALL = "campaigns.view_all_campaigns"


def campaigns_visible(actor: Actor) -> QuerySet[Campaign]:
    """The campaigns ``actor`` may see (a list page); refused without the view permission."""
    if not actor.has_perm(VIEW):
        raise permission_denied(VIEW)
    qs = Campaign.objects.all()
    if actor.user is None or actor.has_perm(VIEW_ALL):
        return qs
    return qs.filter(Q(owner_id=actor.user_id) | Q(created_by_id=actor.user_id))


def campaign_access(*, actor: Actor, campaign_id: Any, lock: bool = False) -> Campaign:
    """One campaign ``actor`` may see, or a coded error (validation, permission, not found).

    ``lock``: the row is locked (``FOR UPDATE`` of the campaign only) for the caller's
    transaction, so a write re-checks its state on the row it then changes."""
    if isinstance(campaign_id, bool) or not isinstance(campaign_id, int):
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            "campaign_id must be an integer.",
            field="campaign_id",
            hint="See sms_marketing.campaigns.list.",
        )
    qs = campaigns_visible(actor).select_related(
        "segment", "gateway", "short_link", "template_version", "owner", "approved_by"
    )
    if lock:
        qs = qs.select_for_update(of=("self",))
    campaign = qs.filter(pk=campaign_id).first()
    if campaign is None:
        raise not_found("campaign", campaign_id, field="campaign_id", hint="See sms_marketing.campaigns.list.")
    return campaign
