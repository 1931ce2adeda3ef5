"""Campaign writes, one module per action: create a draft, update named fields, schedule, send,
cancel, resend failed messages.

Every write is a governed action (compliance.governance): ``check`` runs every rule of
``campaigns.content.campaign_evaluate`` on live data and returns the facts the approval
policies look at, with the evaluation as the context ``execute`` reuses; ``execute`` does the
write. A live send or schedule needs either an approval by someone else (the action request)
or an explicit confirmation by an actor holding ``campaigns.confirm_campaign``: a marketer can
never send unreviewed.

The public services are importable from here (importing the package registers every action).
"""

from campaigns.services.cancel import CANCELLABLE, campaign_cancel_schedule
from campaigns.services.common import ADD, CHANGE, CONFIRM, SCHEDULE, SEND
from campaigns.services.create import campaign_create_draft
from campaigns.services.resend import failed_messages_resend
from campaigns.services.schedule import campaign_schedule
from campaigns.services.send import campaign_send_approved
from campaigns.services.update import campaign_update

__all__ = [
    "ADD",
    "CANCELLABLE",
    "CHANGE",
    "CONFIRM",
    "SCHEDULE",
    "SEND",
    "campaign_cancel_schedule",
    "campaign_create_draft",
    "campaign_schedule",
    "campaign_send_approved",
    "campaign_update",
    "failed_messages_resend",
]
