"""sms_marketing.review_notification.send: tell the people responsible for a campaign, flow or action
request about a review to do, a send to confirm, a cost anomaly, an opt-out spike, delivery failures
or a poor ROI.

Who may be told (``responsible_users``): the campaign's owner, the approvers of its action requests
(who decided them, and the holders of the role a pending one waits for), and the holders of the
platform roles (owners.list) that answer for the notification's kind. Anyone else is refused by
name. An e-mail address of no platform user is external: like a notification to more people than
``alerts.bulk_recipients``, it is governed (``notification.send``) and never goes out without an
approval. Title and body are scanned: a phone number (phonenumbers' matcher, Hong Kong and
international, and any long run of digits) or a list of contact-like lines is refused, naming the
field.

Delivery: one InboxItem per platform user (the admin's "My notifications"), and one e-mail on the
kernel's notification outbox (written in this transaction, sent after commit by Celery with
retries) to the users' addresses and the approved external ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import phonenumbers
from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from campaigns.access import campaign_access
from campaigns.models import Campaign
from compliance.governance import Checked, GovernedAction, governed_write, register_action
from compliance.models import ActionRequest, ActionType, RequestState
from compliance.roles import Role
from reporting.errors import ReportingErrorCode
from reporting.models import (
    InboxItem,
    NotificationKind,
    NotificationOrigin,
    NotificationSubject,
    ReviewNotification,
)
from reporting.snapshots import FLOW_MODEL
from smsplatform.config_service import platform_config_data
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.errors import ApplicationError, ErrorCode, not_found, permission_denied
from smsplatform.kernel.notifications import notification_record

PERMISSION = "reporting.add_reviewnotification"
VIEW_ALL_REQUESTS = "compliance.view_all_actionrequests"

# Which platform roles answer for each kind (besides the subject's owner and approvers).
KIND_ROLES: dict[str, tuple[Role, ...]] = {
    NotificationKind.REVIEW: (Role.APPROVER, Role.COMPLIANCE),
    NotificationKind.SEND_CONFIRM: (Role.APPROVER, Role.OPERATIONS),
    NotificationKind.COST_ANOMALY: (Role.OPERATIONS, Role.MARKETING),
    NotificationKind.OPTOUT_SPIKE: (Role.COMPLIANCE, Role.CRM),
    NotificationKind.DELIVERY_FAILURES: (Role.OPERATIONS, Role.TECHNICAL),
    NotificationKind.POOR_ROI: (Role.MARKETING,),
}
# Kinds that are about a request waiting for someone, and kinds that are about results.
REQUEST_KINDS = {NotificationKind.REVIEW, NotificationKind.SEND_CONFIRM}
RESULT_KINDS = set(NotificationKind.values) - REQUEST_KINDS


# The content scan -----------------------------------------------------------------------------

# Dates, times and amounts are not phone numbers: taken out before the digit-run check.
_NOT_PHONES = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?)?|\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d+|\d{1,2}:\d{2}"
)
# Eight or more digits, optionally split by single spaces, dashes or dots: a phone or an id list.
_DIGIT_RUN = re.compile(r"(?<![\w*])\+?\d(?:[ \-.]?\d){7,}(?![\w*])")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_ROW_SEPARATORS = re.compile(r"[,;\t|]")
LIST_LINES = 4
LIST_EMAILS = 3


def _personal_data(text: str, field: str) -> None:
    """Refuse text carrying a phone number or a contact list (safety: necessary summaries only)."""
    for match in phonenumbers.PhoneNumberMatcher(text, "HK", leniency=phonenumbers.Leniency.VALID):
        raise ApplicationError(
            ReportingErrorCode.NOTIFICATION_PERSONAL_DATA,
            f"{field} contains a phone number (at character {match.start + 1}); notifications never carry one.",
            field=field,
            hint="Summarise (counts, rates, the campaign's name); masked numbers such as +852 9123 **** are fine.",
        )
    run = _DIGIT_RUN.search(_NOT_PHONES.sub(" ", text))
    if run is not None:
        raise ApplicationError(
            ReportingErrorCode.NOTIFICATION_PERSONAL_DATA,
            f"{field} contains a run of {sum(c.isdigit() for c in run.group())} digits that may be a phone number.",
            field=field,
            hint="Leave numbers and identifiers out, or mask them (+852 9123 ****).",
        )
    if len(_EMAIL.findall(text)) >= LIST_EMAILS:
        raise ApplicationError(
            ReportingErrorCode.NOTIFICATION_PERSONAL_DATA,
            f"{field} lists e-mail addresses; notifications never carry contact lists.",
            field=field,
            hint="Name the segment or the report instead of listing people.",
        )
    rows = [line for line in text.splitlines() if len(_ROW_SEPARATORS.findall(line)) >= 2 or _EMAIL.search(line)]
    if len(rows) >= LIST_LINES:
        raise ApplicationError(
            ReportingErrorCode.NOTIFICATION_PERSONAL_DATA,
            f"{field} holds {len(rows)} lines of tabular or contact data; notifications never carry lists.",
            field=field,
            hint="Send a summary and point to the campaign's report.",
        )


# Subjects and who answers for them ------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    kind: str
    campaign: Campaign | None = None
    flow_id: int | None = None
    request: ActionRequest | None = None

    def ref(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "campaign_id": self.campaign.pk if self.campaign else None,
            "flow_id": self.flow_id,
            "action_request_id": self.request.pk if self.request else None,
        }

    def label(self) -> str:
        if self.campaign is not None:
            return f"campaign #{self.campaign.pk} {self.campaign.name}"
        if self.request is not None:
            return f"action request #{self.request.pk} ({self.request.action})"
        return f"flow #{self.flow_id}"


def _positive_id(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ApplicationError(ErrorCode.VALIDATION_ERROR, f"{field} must be a positive integer.", field=field)
    return value


def subject_resolve(*, actor: Actor, subject: Any) -> Subject:
    """The subject the actor may see, or a coded error (not found rather than a leak)."""
    allowed = {"campaign_id", "flow_id", "action_request_id"}
    if isinstance(subject, dict) and set(subject) - allowed:
        name = sorted(set(subject) - allowed)[0]
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR, f"subject.{name} cannot be set here.", field=f"subject.{name}"
        )
    named = [k for k in sorted(allowed) if isinstance(subject, dict) and subject.get(k) is not None]
    if len(named) != 1:
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            "subject names exactly one of campaign_id, flow_id or action_request_id.",
            field="subject",
            hint="See sms_marketing.campaigns.list or sms_marketing.action_request.status.",
        )
    if named[0] == "campaign_id":
        return Subject(
            NotificationSubject.CAMPAIGN, campaign=campaign_access(actor=actor, campaign_id=subject["campaign_id"])
        )
    if named[0] == "action_request_id":
        request_id = _positive_id(subject["action_request_id"], "subject.action_request_id")
        qs = ActionRequest.objects.select_related("required_role", "requested_by", "decided_by")
        if actor.user is not None and not actor.has_perm(VIEW_ALL_REQUESTS):
            qs = qs.filter(requested_by_id=actor.user_id)
        request = qs.filter(pk=request_id).first()
        if request is None:
            raise not_found(
                "action request",
                request_id,
                field="subject.action_request_id",
                hint="See sms_marketing.action_request.status.",
            )
        return Subject(NotificationSubject.ACTION_REQUEST, request=request)
    flow_id = _positive_id(subject["flow_id"], "subject.flow_id")
    flow_model = apps.get_model(FLOW_MODEL)
    if not flow_model.objects.filter(pk=flow_id).exists():
        raise not_found("flow", flow_id, field="subject.flow_id", hint="See the flows list.")
    return Subject(NotificationSubject.FLOW, flow_id=flow_id)


def _role_holders(roles: tuple[Role, ...] | list[str]) -> Q:
    return Q(groups__name__in=[str(r) for r in roles])


def responsible_users(subject: Subject, kind: str, *, direct_only: bool = False) -> dict[int, str]:
    """The platform users who answer for ``subject`` on a ``kind`` notification: {user id: why}.
    ``direct_only``: the owner and the approvers only (the beat's fallback when the role holders
    would make it a bulk notification)."""
    users = get_user_model().objects.filter(is_active=True)
    why: dict[int, str] = {}
    requests = ActionRequest.objects.none()
    if subject.campaign is not None:
        campaign = subject.campaign
        why[campaign.owner_id] = "campaign owner"
        requests = ActionRequest.objects.filter(
            Q(payload__campaign_id=campaign.pk) | Q(pk=campaign.approval_request_id or 0)
        )
        if campaign.approved_by_id:
            why.setdefault(campaign.approved_by_id, "approved the campaign")
    if subject.request is not None:
        requests = ActionRequest.objects.filter(pk=subject.request.pk)
        why[subject.request.requested_by_id] = "requested it"
    for decided_by, role_id, state in requests.values_list("decided_by_id", "required_role_id", "state"):
        if decided_by:
            why.setdefault(decided_by, "approver of its requests")
        if state == RequestState.PENDING:
            for uid in users.filter(groups__id=role_id).values_list("pk", flat=True):
                why.setdefault(uid, "approver of its pending request")
    active = set(users.filter(pk__in=list(why)).values_list("pk", flat=True))
    why = {uid: reason for uid, reason in why.items() if uid in active}
    if not direct_only:
        roles = KIND_ROLES.get(kind, ())
        for uid, role in users.filter(_role_holders(roles)).values_list("pk", "groups__name"):
            if role in {str(r) for r in roles}:
                why.setdefault(uid, f"{role} role holder")
    return why


# The governed action --------------------------------------------------------------------------


def _recipients(raw: Any, subject: Subject, kind: str) -> tuple[list[int], list[str]]:
    """Resolve and check the named recipients: (platform user ids, external e-mail addresses)."""
    responsible = responsible_users(subject, kind)
    if raw in (None, []):
        if not responsible:
            raise ApplicationError(
                ReportingErrorCode.NOTIFICATION_NO_RECIPIENTS,
                f"Nobody answers for {subject.label()} on a {kind} notification.",
                field="recipients",
                hint="Assign an owner or give someone the role (sms_marketing.owners.list).",
            )
        return sorted(responsible), []
    if not isinstance(raw, list) or len(raw) > 200:
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            "recipients is a list of at most 200 usernames or e-mail addresses.",
            field="recipients",
        )
    user_model = get_user_model()
    ids: set[int] = set()
    external: set[str] = set()
    for index, entry in enumerate(raw):
        field = f"recipients.{index}"
        if not isinstance(entry, str) or not entry.strip() or len(entry) > 254:
            raise ApplicationError(
                ErrorCode.VALIDATION_ERROR, f"{field} must be a username or an e-mail address.", field=field
            )
        entry = entry.strip()
        if "@" in entry:
            try:
                validate_email(entry)
            except ValidationError:
                raise ApplicationError(
                    ErrorCode.VALIDATION_ERROR, f"{field} is not a valid e-mail address.", field=field
                ) from None
            user = user_model.objects.filter(email__iexact=entry, is_active=True).order_by("pk").first()
            if user is None:
                external.add(entry.lower())
                continue
        else:
            user = user_model.objects.filter(username=entry, is_active=True).first()
            if user is None:
                raise ApplicationError(
                    ReportingErrorCode.NOTIFICATION_RECIPIENT_UNKNOWN,
                    f"No active platform user {entry!r}.",
                    field=field,
                    hint="See sms_marketing.owners.list for the people and their roles.",
                )
        if user.pk not in responsible:
            raise ApplicationError(
                ReportingErrorCode.NOTIFICATION_RECIPIENT_UNRELATED,
                f"{entry!r} has nothing to do with {subject.label()}: not its owner, an approver of its requests, "
                f"nor a holder of a role answering for {kind} ({', '.join(KIND_ROLES[kind])}).",
                field=field,
                hint="Notify only the people responsible; leave recipients out to notify all of them.",
            )
        ids.add(user.pk)
    return sorted(ids), sorted(external)


def _text(value: Any, field: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise ApplicationError(ErrorCode.VALIDATION_ERROR, f"{field} is a text of 1-{limit} characters.", field=field)
    return value.strip()


def _validated(actor: Actor, payload: dict[str, Any]) -> tuple[Subject, list[int], list[str], dict[str, Any]]:
    kind = payload.get("kind")
    if kind not in NotificationKind.values:
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR, "kind must be one of " + ", ".join(NotificationKind.values) + ".", field="kind"
        )
    subject = subject_resolve(actor=actor, subject=payload.get("subject"))
    if kind in RESULT_KINDS and subject.kind == NotificationSubject.ACTION_REQUEST:
        raise ApplicationError(
            ReportingErrorCode.NOTIFICATION_SUBJECT_MISMATCH,
            f"A {kind} notification is about a campaign or a flow, not an action request.",
            field="subject",
            hint="Name the campaign (subject.campaign_id).",
        )
    title = _text(payload.get("title"), "title", 200)
    body = _text(payload.get("body"), "body", 4000)
    _personal_data(title, "title")
    _personal_data(body, "body")
    users, external = _recipients(payload.get("recipients"), subject, str(kind))
    bulk = int(platform_config_data()["alerts"]["bulk_recipients"])
    total = len(users) + len(external)
    facts = {
        "kind": kind,
        "subject": subject.ref(),
        "recipients": total,
        "external": external,
        "bulk": total > bulk,
        # The condition the notification.send policies look at: external or bulk is "sensitive".
        "sensitive": bool(external) or total > bulk,
    }
    return subject, users, external, facts


def _check(actor: Actor, payload: dict[str, Any]) -> Checked:
    subject, users, external, facts = _validated(actor, payload)
    return Checked(facts=facts, context=(subject, users, external))


def notification_deliver_rows(
    *,
    actor: Actor,
    kind: str,
    subject: Subject,
    title: str,
    body: str,
    user_ids: list[int],
    external: list[str],
    origin: str = NotificationOrigin.SENT,
    reason: str = "",
    action_request_id: int | None = None,
) -> ReviewNotification:
    """Write the notification, its inbox items and its outbox e-mail (in the caller's transaction)."""
    users = list(get_user_model().objects.filter(pk__in=user_ids).order_by("username"))
    notification = ReviewNotification.objects.create(
        kind=kind,
        origin=origin,
        subject_kind=subject.kind,
        campaign=subject.campaign,
        flow_id=subject.flow_id,
        subject_request=subject.request,
        title=title,
        body=body,
        recipients=[u.username for u in users],
        external_recipients=external,
        sent_by=actor.user,
        actor_channel=str(actor.channel),
        actor_token_name=actor.token_name,
        reason=reason,
        action_request_id=action_request_id,
    )
    InboxItem.objects.bulk_create([InboxItem(notification=notification, user=u) for u in users])
    addresses = sorted({u.email.lower() for u in users if u.email} | set(external))
    if addresses:
        label = NotificationKind(kind).label
        # The outbox row is part of this transaction; the e-mail leaves after commit (Celery).
        outbox = notification_record(
            recipients=addresses,
            subject=f"[SMS platform] {label}: {title}",
            body=f"{body}\n\n-- {label} about {subject.label()}. See 'My notifications' in the admin.",
            object_type="review_notification",
            object_id=notification.pk,
        )
        notification.outbox = outbox
        notification.save(update_fields=["outbox"])
    return notification


def notification_dict(notification: ReviewNotification) -> dict[str, Any]:
    return {
        "notification_id": notification.pk,
        "kind": notification.kind,
        "origin": notification.origin,
        "subject": {
            "kind": notification.subject_kind,
            "campaign_id": notification.campaign_id,
            "flow_id": notification.flow_id,
            "action_request_id": notification.subject_request_id,
        },
        "title": notification.title,
        "recipients": list(notification.recipients),
        "external_recipients": list(notification.external_recipients),
        "email_queued": notification.outbox_id is not None,
        "outbox_id": notification.outbox_id,
        "created_at": notification.created_at.isoformat(),
    }


def _execute(actor: Actor, payload: dict[str, Any], request: ActionRequest | None, context: Any) -> dict[str, Any]:
    # The context of the check that just ran (governed_write and approval both run it first).
    subject, users, external = context
    if request is None and (external or len(users) > int(platform_config_data()["alerts"]["bulk_recipients"])):
        # Fail safe: with no policy that holds it, an external or bulk notification is refused,
        # never sent without an approval.
        raise ApplicationError(
            ReportingErrorCode.APPROVAL_POLICY_MISSING,
            "External or bulk notifications need an approval, and no approval policy applies to this one.",
            field="recipients",
            hint="An administrator adds an enabled policy for notification.send (condition: sensitive content, "
            "or recipients over N); or notify only the platform users responsible.",
        )
    notification = notification_deliver_rows(
        actor=actor,
        kind=payload["kind"],
        subject=subject,
        title=payload["title"].strip(),
        body=payload["body"].strip(),
        user_ids=users,
        external=external,
        reason=payload.get("reason", ""),
        action_request_id=request.pk if request else None,
    )
    out = notification_dict(notification)
    audit_record(
        actor=actor,
        action="review_notification.send",
        object_type="review_notification",
        object_id=notification.pk,
        after=out,
        reason=payload.get("reason", ""),
        action_request_id=request.pk if request else None,
    )
    return out


def _summary(payload: dict[str, Any], facts: dict[str, Any]) -> str:
    extra = f", {len(facts.get('external') or [])} external" if facts.get("external") else ""
    return f"Notify {facts.get('recipients')} people ({payload.get('kind')}{extra}): {payload.get('title', '')}"


register_action(
    GovernedAction(
        action=ActionType.NOTIFICATION_SEND,
        permission=PERMISSION,
        check=_check,
        execute=_execute,
        summary=_summary,
    )
)


def review_notification_send(
    *,
    actor: Actor,
    kind: str,
    subject: dict[str, Any],
    title: str,
    body: str,
    recipients: list[str] | None = None,
    idempotency_key: str | None,
    reason: str = "",
) -> dict[str, Any]:
    """Notify the people responsible; external or bulk notifications are held for approval."""
    if not actor.has_perm(PERMISSION):
        raise permission_denied(PERMISSION)
    payload = {
        "kind": kind,
        "subject": subject,
        "title": title,
        "body": body,
        "recipients": recipients or [],
        "reason": reason,
    }
    # Refuse early (before the idempotency record): the same checks run again inside the write.
    _validated(actor, payload)
    return governed_write(
        actor=actor,
        action=ActionType.NOTIFICATION_SEND,
        payload=payload,
        idempotency_key=idempotency_key,
        reason=reason,
    )


# The inbox ----------------------------------------------------------------------------------------


def inbox_mark_read(*, actor: Actor, item_ids: list[int]) -> int:
    """Mark the actor's own inbox items read; items of other users are never touched."""
    if actor.user is None:
        return 0
    with transaction.atomic(durable=True):
        mine = InboxItem.objects.filter(pk__in=item_ids, user=actor.user, read_at__isnull=True)
        marked = sorted(mine.values_list("pk", flat=True))
        count = InboxItem.objects.filter(pk__in=marked, read_at__isnull=True).update(read_at=timezone.now())
        if count:
            audit_record(actor=actor, action="inbox.mark_read", object_type="inbox_item", after={"items": marked})
    return count
