"""Writes of the OTP app: otp_template.save (always approved by another person), otp.send (governed)
and the code check.

Codes never leave this module except inside the SMS body handed to the outbound queue: answers,
audit rows and logs carry the verification id and a masked phone, never the code. Counters move
only by conditional UPDATEs, so concurrent sends and checks cannot pass the limits.

A resend issues a new code with a fresh validity window and replaces the previous code's hash: the
earlier code stops working at once (an SMS that arrives late can never be the one that counts, and
a person holds at most one valid code per verification).
"""

from __future__ import annotations

import ipaddress
import re
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

import psycopg
from django.db import IntegrityError, connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from campaigns.otp import abuse
from campaigns.otp.codes import body_masked, body_render, code_generate, code_hash, code_matches, verification_public_id
from campaigns.otp.errors import OtpErrorCode
from campaigns.otp.models import (
    Locale,
    OtpRateCounter,
    OtpTemplate,
    OtpTemplateVersion,
    Verification,
    VerificationSend,
    VerificationStatus,
)
from campaigns.otp.rules import CONTENT_KEYS, otp_content_validate
from campaigns.otp.scrub import otp_bodies_scrub
from compliance.governance import Checked, GovernedAction, governed_write, register_action
from compliance.models import ActionRequest, ActionType
from compliance.roles import Role
from gateways.delivery.queue import bulk_yield, message_hold, message_queue, message_submit_on_commit
from gateways.errors import GatewayErrorCode
from gateways.models import MessagePurpose, OutboundMessage
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.errors import ApplicationError, ErrorCode, not_found, permission_denied
from smsplatform.kernel.idempotency import idempotent_replay_of, idempotent_replay_query
from smsplatform.kernel.inserts import insert_unless_conflict
from smsplatform.kernel.phones import phone_mask, phone_parse
from smsplatform.kernel.roundtrips import firsts_together
from smsplatform.kernel.versioning import parse_version_token, stale_token_error, version_token
from smsplatform.models import AuditLog

TEMPLATE_LABEL = "otp_template"
ADD_TEMPLATE = "otp.add_otptemplate"
CHANGE_TEMPLATE = "otp.change_otptemplate"
SEND_PERMISSION = "otp.send_verification"
CHECK_PERMISSION = "otp.check_verification"
CODE_INPUT_RE = re.compile(r"^[0-9A-Za-z]{4,10}$")
ENDED = (
    VerificationStatus.APPROVED,
    VerificationStatus.EXPIRED,
    VerificationStatus.LOCKED,
    VerificationStatus.CANCELED,
)


# --- otp_template.save ----------------------------------------------------------------------------


def _template(template_id: Any) -> OtpTemplate:
    template = OtpTemplate.objects.filter(pk=template_id).first() if isinstance(template_id, int) else None
    if template is None:
        raise not_found("OTP template", template_id, field="template_id", hint="Call sms_marketing.otp_templates.list.")
    return template


def _name_taken(name: str) -> ApplicationError:
    return ApplicationError(
        OtpErrorCode.TEMPLATE_NAME_TAKEN,
        f"An OTP template named {name!r} exists.",
        field="name",
        hint="Choose another name, or update that template (otp_templates.list gives its id and token).",
    )


def _name_holder(name: str, *, exclude: int | None) -> OtpTemplate | None:
    """The approved template that holds ``name``. Requests for a new template with one name share one
    unapproved row (see _template_on_hold); the first approved wins it, the others fail when approved."""
    holders = OtpTemplate.objects.filter(name=name, version__gt=0)
    if exclude is not None:
        holders = holders.exclude(pk=exclude)
    return holders.first()


def content_of(version: OtpTemplateVersion) -> dict[str, Any]:
    return {key: getattr(version, key) for key in CONTENT_KEYS}


def _template_check(actor: Actor, payload: dict[str, Any]) -> Checked:
    content = otp_content_validate(payload["content"])
    template_id = payload.get("template_id")
    if template_id is not None:
        if not actor.has_perm(CHANGE_TEMPLATE):
            raise permission_denied(CHANGE_TEMPLATE)
        template = _template(template_id)
        expected = parse_version_token(payload.get("base_version_token"), label=TEMPLATE_LABEL, pk=template.pk)
        if expected != template.version:
            raise stale_token_error(label=TEMPLATE_LABEL, pk=template.pk, current_version=template.version)
    if _name_holder(content["name"], exclude=template_id) is not None:
        raise _name_taken(content["name"])
    return Checked(
        facts={
            "sensitive": True,
            "sensitive_reasons": ["OTP wording"],
            "template_id": template_id,
            "purpose": content["purpose"],
            "new_template": template_id is None,
        }
    )


def _template_on_hold(actor: Actor, payload: dict[str, Any], request: ActionRequest) -> None:
    """The requested version is written with its request, so lists show it awaiting approval."""
    content = otp_content_validate(payload["content"])
    now = timezone.now()
    if payload.get("template_id") is None:
        template = OtpTemplate.objects.filter(name=content["name"], version=0).first()
        if template is None:
            try:
                with transaction.atomic():  # a savepoint: a concurrent request for the name loses cleanly
                    template = OtpTemplate.objects.create(
                        name=content["name"], purpose=content["purpose"], created_by_id=actor.user_id, created_at=now
                    )
            except IntegrityError:
                raise _name_taken(content["name"]) from None
    else:
        template = _template(payload["template_id"])
    OtpTemplateVersion.objects.create(
        template=template,
        **content,
        action_request_id=request.pk,
        reason=payload.get("reason", ""),
        created_at=now,
        created_by_id=actor.user_id,
    )


def _template_execute(
    actor: Actor, payload: dict[str, Any], request: ActionRequest | None, context: Any
) -> dict[str, Any]:
    if request is None:  # pragma: no cover - the action is always held (always_held_by)
        raise ApplicationError(ErrorCode.INTERNAL_ERROR, "An OTP template is saved only through its approval.")
    version = OtpTemplateVersion.objects.select_related("template").get(action_request_id=request.pk)
    template = version.template
    expected = 0  # a new template: its first approved version
    if payload.get("template_id") is not None:
        expected = parse_version_token(payload["base_version_token"], label=TEMPLATE_LABEL, pk=template.pk)
    now = timezone.now()
    before = content_of(template.current_version) if template.current_version else None
    # Compare-and-set on the version: of two approved requests from one token, exactly one wins.
    updated = OtpTemplate.objects.filter(pk=template.pk, version=expected).update(
        version=expected + 1,
        current_version=version,
        name=version.name,
        purpose=version.purpose,
        updated_at=now,
    )
    if updated != 1:
        current = OtpTemplate.objects.values_list("version", flat=True).get(pk=template.pk)
        raise stale_token_error(label=TEMPLATE_LABEL, pk=template.pk, current_version=current)
    OtpTemplateVersion.objects.filter(pk=version.pk).update(
        number=expected + 1, approved_at=now, approved_by_id=request.decided_by_id
    )
    audit_record(
        actor=actor,
        action="otp_template.save",
        object_type="otp_template",
        object_id=template.pk,
        before=before,
        after={"version": expected + 1, "version_id": version.pk, **content_of(version)},
        reason=payload.get("reason", ""),
        action_request_id=request.pk,
    )
    return {
        "template_id": template.pk,
        "version": expected + 1,
        "version_id": version.pk,
        "base_version_token": version_token(TEMPLATE_LABEL, template.pk, expected + 1),
        "approval_state": "approved",
    }


def _template_summary(payload: dict[str, Any], facts: dict[str, Any]) -> str:
    what = "New OTP template" if payload.get("template_id") is None else f"OTP template #{payload['template_id']}"
    return f"{what} {payload['content'].get('name', '')!r} ({payload['content'].get('purpose')})"


register_action(
    GovernedAction(
        action=ActionType.OTP_TEMPLATE_SAVE,
        permission=ADD_TEMPLATE,
        check=_template_check,
        execute=_template_execute,
        summary=_template_summary,
        on_hold=_template_on_hold,
        always_held_by=Role.APPROVER,
    )
)


def otp_template_save(
    *,
    actor: Actor,
    idempotency_key: str | None,
    content: dict[str, Any],
    template_id: int | None = None,
    base_version_token: str | None = None,
    reason: str = "",
) -> dict[str, Any]:
    """Request a new OTP template, or a new version of one (with its base_version_token). Always held
    for an approver: the version is used only once another person approved it in the admin."""
    if not isinstance(content, dict):
        raise ApplicationError(ErrorCode.VALIDATION_ERROR, "content must be an object.", field="content")
    merged = dict(content)
    if template_id is not None:
        template = _template(template_id)
        parse_version_token(base_version_token, label=TEMPLATE_LABEL, pk=template.pk)  # required, well formed
        latest = template.current_version
        if latest is not None:
            merged = {**content_of(latest), **content}
    # Freeze the validated, normalised content: that is what the approver sees and approves.
    payload = {
        "template_id": template_id,
        "base_version_token": base_version_token,
        "content": otp_content_validate(merged),
        "reason": reason,
    }
    return governed_write(
        actor=actor,
        action=ActionType.OTP_TEMPLATE_SAVE,
        payload=payload,
        idempotency_key=idempotency_key,
        reason=reason,
    )


# --- otp.send -------------------------------------------------------------------------------------


# Template id -> the gateway its approved version sent the last code by, in this process: a hint
# that lets otp_send ask that gateway's bulk lane to yield before its first read instead of after
# the template's (gateways.delivery.queue.bulk_yield; a wrong hint costs a campaign a moment, never
# a message, and the right gateway is asked once the template is read).
_yield_hints: dict[int, str] = {}

# The template rows one otp_send call has read (its pre-check before the abuse counters and its
# governed check read the same template): one call, one read. Set only for the call's duration;
# an action request executed later (an approver's) reads afresh.
_send_templates: ContextVar[dict[int, OtpTemplate | None] | None] = ContextVar("otp_send_templates", default=None)


def _approved_query(template_id: int) -> QuerySet[OtpTemplate]:
    return OtpTemplate.objects.select_related("current_version").filter(pk=template_id)[:1]


def _approved(template_id: Any) -> tuple[OtpTemplate, OtpTemplateVersion]:
    # The template and its approved version in one query.
    memo = _send_templates.get()
    if not isinstance(template_id, int):
        template = None
    elif memo is not None and template_id in memo:
        template = memo[template_id]
    else:
        found = list(_approved_query(template_id))  # sliced to one row
        template = found[0] if found else None
        if memo is not None:
            memo[template_id] = template
    if template is None:
        raise not_found("OTP template", template_id, field="template_id", hint="Call sms_marketing.otp_templates.list.")
    version = template.current_version
    if version is None:
        raise ApplicationError(
            OtpErrorCode.TEMPLATE_NOT_APPROVED,
            f"OTP template #{template.pk} has no approved version yet.",
            field="template_id",
            hint="An approver must approve it in the admin (action requests); otp_templates.list shows its state.",
        )
    return template, version


def _send_check(actor: Actor, payload: dict[str, Any]) -> Checked:
    template, version = _approved(payload["template_id"])
    phone = phone_parse(payload["phone"], field="phone")
    if phone.country not in version.allowed_countries:
        raise ApplicationError(
            OtpErrorCode.COUNTRY_NOT_ALLOWED,
            f"Template #{template.pk} does not send to {phone.country or 'that country'}.",
            field="phone",
            hint=f"Allowed: {', '.join(version.allowed_countries)} (a new template version changes the list).",
        )
    return Checked(
        facts={"recipients": 1, "country": phone.country, "template_id": template.pk, "purpose": version.purpose},
        context=(template, version, phone),
    )


def _expire_if_due(pk: int, now: Any) -> None:
    Verification.objects.filter(pk=pk, status=VerificationStatus.PENDING, expires_at__lte=now).update(
        status=VerificationStatus.EXPIRED, ended_at=now, updated_at=now
    )


def _start_or_resend(
    *,
    actor: Actor,
    template: OtpTemplate,
    version: OtpTemplateVersion,
    e164: str,
    country: str,
    payload: dict[str, Any],
    unflushed: bool = False,
) -> tuple[Verification, str]:
    """The pending verification for (phone, template) with a new code, or a new verification.
    Returns it and the code (which only the SMS body receives).

    A first send, the usual case, is one statement: the insert, which the unique pending
    constraint turns into nothing when (phone, template) has a pending verification; then it is
    a resend within that one. ``unflushed``: the caller's transaction commits without waiting for
    its WAL flush, the SET sent with the first insert (smsplatform.kernel.commits)."""
    validity = timedelta(minutes=version.validity_minutes)
    for attempt in range(4):
        now = timezone.now()
        public_id = verification_public_id()
        code = code_generate(length=version.code_length, alphabet=version.alphabet)
        verification = Verification(
            public_id=public_id,
            template=template,
            template_version=version,
            phone=e164,
            country=country,
            locale=payload["locale"],
            code_hash=code_hash(verification_id=public_id, code=code),
            sends=1,
            max_sends=version.max_sends,
            max_checks=version.max_checks,
            expires_at=now + validity,
            client_ip=payload.get("client_ip") or None,
            created_by_id=actor.user_id,
            channel=str(actor.channel),
            token_name=actor.token_name,
            created_at=now,
            updated_at=now,
        )
        # One statement, no savepoint; a concurrent first send for this phone and template that
        # wins the constraint makes this one a resend within it.
        if insert_unless_conflict(verification, unflushed=unflushed and attempt == 0):
            return verification, code
        pending = (
            Verification.objects.filter(phone=e164, template=template, status=VerificationStatus.PENDING)
            .values_list("pk", "public_id", "expires_at")
            .first()
        )
        if pending is None:
            continue  # it ended meanwhile: start a new one
        pk, public_id, expires_at = pending
        if expires_at <= now:
            _expire_if_due(pk, now)
            continue
        # The code drawn for the insert, which stored nothing, is this resend's.
        # The conditional UPDATE is the limit: on PostgreSQL concurrent resends queue on the row
        # lock and each re-reads sends < max_sends, so no more than max_sends ever pass.
        updated = Verification.objects.filter(
            pk=pk, status=VerificationStatus.PENDING, sends__lt=F("max_sends"), expires_at__gt=now
        ).update(
            sends=F("sends") + 1,
            code_hash=code_hash(verification_id=public_id, code=code),
            expires_at=now + validity,
            updated_at=now,
        )
        verification = Verification.objects.get(pk=pk)
        if verification.template_version_id == version.pk:
            verification.template_version = version  # already read: no second query for it
        if updated == 1:
            return verification, code
        if verification.status == VerificationStatus.PENDING and verification.sends >= verification.max_sends:
            raise ApplicationError(
                OtpErrorCode.MAX_SENDS_REACHED,
                f"Verification {verification.public_id} has sent its {verification.max_sends} codes.",
                field="phone",
                hint="Let the person enter the last code, or start again after it expires "
                f"({verification.expires_at.isoformat()}).",
                details={
                    "verification_id": verification.public_id,
                    "retry_after": verification.expires_at.isoformat(),
                },
            )
        # it ended or expired meanwhile: start a new one
    raise ApplicationError(
        ErrorCode.IDEMPOTENCY_IN_PROGRESS,
        "Another send for this phone and template is changing the verification.",
        field="phone",
        hint="Retry in a moment with a new idempotency_key.",
    )


def _queue(
    *, actor: Actor, version: OtpTemplateVersion, e164: str, body: str, reference: str, quota_reference: str
) -> OutboundMessage:
    """Queue on the template's gateway, or on its fallback when the first does not cover the country."""
    gateways = [version.gateway or None]
    if version.fallback_gateway:
        gateways.append(version.fallback_gateway)
    for index, gateway in enumerate(gateways):
        try:
            # A savepoint only when a fallback follows: a refusal of the first gateway leaves nothing
            # behind; a refusal of the last one fails the whole send (its transaction rolls back).
            with transaction.atomic(savepoint=index < len(gateways) - 1):
                return message_queue(
                    actor=actor,
                    gateway_code=gateway,
                    sender_id=version.sender_id,
                    destination=e164,
                    body=body,
                    purpose=MessagePurpose.OTP,
                    reference=reference,
                    hold=False,  # held last by _send_execute
                    quota_reference=quota_reference,
                )
        except ApplicationError as exc:
            if exc.code != GatewayErrorCode.COUNTRY_NOT_COVERED or index == len(gateways) - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _send_execute(actor: Actor, payload: dict[str, Any], request: ActionRequest | None, context: Any) -> dict[str, Any]:
    template, version, phone = context
    verification, code = _start_or_resend(
        actor=actor,
        template=template,
        version=version,
        e164=phone.e164,
        country=phone.country,
        payload=payload,
        # The send reaches the SMSC only through a claim that commits synchronously after it, which
        # puts these records on disk first: its own commit need not wait (smsplatform.kernel.commits).
        # Not when an approver's decision executes it: that decision is committed durably.
        unflushed=request is None,
    )
    body = verification.template_version.body_zh_hant if payload["locale"] == Locale.ZH_HANT else None
    source = body or verification.template_version.body_en
    used = verification.template_version
    message = _queue(
        actor=actor,
        version=used,
        e164=phone.e164,
        body=body_render(source, code=code, minutes=used.validity_minutes),
        reference=f"otp:{verification.public_id}",
        # Unique per send (the verification and its send number): no UPDATE to name it after the insert.
        quota_reference=f"otp:{verification.public_id}:{verification.sends}",
    )
    VerificationSend.objects.create(
        verification=verification,
        number=verification.sends,
        message=message,
        masked_body=body_masked(source, code_length=len(code), minutes=used.validity_minutes),
    )
    del code  # nothing below may see it
    result = verification_payload(verification, message_id=message.pk)
    audit_record(
        actor=actor,
        action="otp.send",
        object_type="verification",
        object_id=verification.public_id,
        after={
            "template_id": template.pk,
            "template_version": used.number,
            "phone": phone_mask(phone.e164),
            "country": phone.country,
            "locale": payload["locale"],
            "client_ip": payload.get("client_ip") or None,
            "send": verification.sends,
            "message_id": message.pk,
            "gateway": message.gateway_id,
        },
        reason=payload.get("reason", ""),
        action_request_id=request.pk if request else None,
    )
    # The quota hold last: it locks the account row (which bind workers' flushes charge), so the
    # lock is held for the hold and the governed write's closing statement only.
    message_hold(actor=actor, message=message)
    message_submit_on_commit(message.gateway, [message.pk])  # the gateway row message_queue read
    return result


def _send_summary(payload: dict[str, Any], facts: dict[str, Any]) -> str:
    return f"OTP to {phone_mask(payload['phone'])} ({facts.get('country')}) with template #{payload['template_id']}"


def _send_audit_view(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "phone": phone_mask(payload["phone"])}


register_action(
    GovernedAction(
        action=ActionType.OTP_SEND,
        permission=SEND_PERMISSION,
        check=_send_check,
        execute=_send_execute,
        summary=_send_summary,
        audit_view=_send_audit_view,
    )
)


def otp_send(
    *,
    actor: Actor,
    template_id: int,
    phone: str,
    locale: str = Locale.EN,
    client_ip: str | None = None,
    idempotency_key: str | None,
    reason: str = "",
) -> dict[str, Any]:
    """Send a code: start a verification for (phone, template) or resend within the pending one.
    Answers the verification (masked phone, expiry, sends and checks used and left), never the code."""
    # Before anything a refused caller could spend: a rate-limit slot, a campaign's yield, a read.
    # (The governed write checks it again, as for every action.)
    if not actor.has_perm(SEND_PERMISSION):
        raise permission_denied(SEND_PERMISSION)
    if locale not in Locale.values:
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR, f"locale must be one of {', '.join(Locale.values)}.", field="locale"
        )
    parsed = phone_parse(str(phone), field="phone")
    if client_ip:
        try:
            client_ip = str(ipaddress.ip_address(str(client_ip).strip()))
        except ValueError:
            raise ApplicationError(
                ErrorCode.VALIDATION_ERROR,
                "client_ip is not an IP address.",
                field="client_ip",
                hint="Pass the end user's IPv4 or IPv6 address as your server saw it.",
            ) from None
    hinted = _yield_hints.get(template_id) if isinstance(template_id, int) else None
    if hinted:
        bulk_yield(hinted)  # before the idempotency and template reads, which a campaign would slow
    payload = {
        "template_id": template_id,
        "phone": parsed.e164,
        "locale": locale,
        "client_ip": client_ip or None,
        "reason": reason,
    }
    memo: dict[int, OtpTemplate | None] = {}
    token = _send_templates.set(memo)
    try:
        # The idempotency record and the template in one round trip (smsplatform.kernel.roundtrips):
        # the template is remembered for the checks below.
        replay_query = idempotent_replay_query(actor=actor, key=idempotency_key)
        template_query = _approved_query(template_id) if isinstance(template_id, int) else None
        existing, template = firsts_together(replay_query, template_query)
        if template_query is not None:
            memo[template_id] = template
        replay = idempotent_replay_of(existing, key=idempotency_key, operation=ActionType.OTP_SEND, payload=payload)
        if replay is not None:
            return replay  # a retry of a send already made: the first answer, and no rate-limit slot taken
        return _send_checked(actor, payload, client_ip, idempotency_key, reason, hinted)
    finally:
        _send_templates.reset(token)


def _send_checked(
    actor: Actor,
    payload: dict[str, Any],
    client_ip: str | None,
    idempotency_key: str | None,
    reason: str,
    hinted: str | None,
) -> dict[str, Any]:
    # The abuse defence counts in transactions of its own (a refusal and a pumping block must outlive
    # the send it stops), so it runs here, before the governed write and outside its transaction;
    # the send's own refusals (no approved version, a country not allowed) come first.
    _template, version, checked_phone = _send_check(actor, payload).context
    # The campaign on this gateway makes room for the code from here on (a split gateway's bulk
    # lane holds its work back for a moment: gateways.smpp.worker, LANES), unless it was asked already.
    if version.gateway != hinted:
        bulk_yield(version.gateway)
    if version.gateway:
        _yield_hints[payload["template_id"]] = version.gateway
    abuse.abuse_check(
        limits=version.limits,
        phone=checked_phone.e164,
        country=checked_phone.country,
        client_ip=client_ip or None,
        token_name=actor.token_name or None,
    )
    return governed_write(
        actor=actor, action=ActionType.OTP_SEND, payload=payload, idempotency_key=idempotency_key, reason=reason
    )


# --- checking -------------------------------------------------------------------------------------


def _closed_error(verification: Verification) -> ApplicationError:
    if verification.status == VerificationStatus.EXPIRED:
        return ApplicationError(
            OtpErrorCode.VERIFICATION_EXPIRED,
            f"Verification {verification.public_id} expired.",
            field="verification_id",
            hint="Send a new code with sms_marketing.otp.send.",
            details={"status": verification.status},
        )
    return ApplicationError(
        OtpErrorCode.VERIFICATION_NOT_PENDING,
        f"Verification {verification.public_id} is {verification.status}: it takes no more checks.",
        field="verification_id",
        hint="A code is used once; a locked or canceled verification needs a new send.",
        details={"status": verification.status},
    )


def _count_check(verification_id: str, now: Any) -> Verification | None:
    """Count one check, conditionally, and read the verification in the same statement (UPDATE ...
    RETURNING, one round trip): None when it takes no check (unknown, ended, expired or out of checks).

    Concurrent checks of one verification queue on its row lock, each re-reading the conditions, so
    no more than max_checks are ever compared; the lock is held to the end of the caller's transaction."""
    table = Verification._meta.db_table
    at = connection.ops.adapt_datetimefield_value(now)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET checks = checks + 1, updated_at = %s "  # noqa: S608 - the table name is ours
            "WHERE public_id = %s AND status = %s AND checks < max_checks AND expires_at > %s "
            "RETURNING id, code_hash, checks, max_checks, phone",
            [at, verification_id, VerificationStatus.PENDING.value, at],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    pk, stored_hash, checks, max_checks, phone = row
    return Verification(
        pk=pk,
        public_id=verification_id,
        code_hash=stored_hash,
        checks=checks,
        max_checks=max_checks,
        phone=phone,
        status=VerificationStatus.PENDING,
    )


_VERIFICATION_TABLE = Verification._meta.db_table
_AUDIT_TABLE = AuditLog._meta.db_table
_COUNTER_TABLE = OtpRateCounter._meta.db_table
# The whole check, one statement (PostgreSQL: data-modifying CTEs), so one implicit transaction, one
# round trip and no BEGIN/COMMIT: count the check, approve or lock, write the audit row and add an
# approval to the verified-prefix counter. The WHERE is re-checked on the locked row by a concurrent
# check or resend (PostgreSQL re-evaluates an UPDATE on the newest row version), so single use,
# max_checks and expiry hold, and a code is compared with the hash the row has when the check takes it.
#
# The compare: the caller's code is hashed in Python with the secret key (HMAC-SHA256 over the
# verification id and the code, as stored), and PostgreSQL compares SHA-256 digests of the two keyed
# hashes. That is the double-HMAC comparison: whatever the timing of ``=`` says is about digests of
# values the caller cannot compute without the key, so it tells nothing about the stored hash or the
# code; it takes the place of a constant-time compare of the raw values.
#
# The counter key is abuse.number_range() in SQL (the number without its last digits). No scrub here:
# the beat's otp.scrub_codes rewrites every sent OTP body within 30 s of its submit, pending or not,
# and an ended verification's code opens nothing. (Rewriting a message in this statement would also
# run the message counters' statement triggers on every check, approving or not.)
_CHECK = (
    f"WITH v AS (UPDATE {_VERIFICATION_TABLE} SET checks = checks + 1, updated_at = %(now)s, "  # noqa: S608 - our names
    "status = CASE WHEN sha256(convert_to(code_hash, 'UTF8')) = sha256(convert_to(%(hash)s, 'UTF8')) "
    "THEN %(approved)s WHEN checks + 1 >= max_checks THEN %(locked)s ELSE status END, "
    "ended_at = CASE WHEN sha256(convert_to(code_hash, 'UTF8')) = sha256(convert_to(%(hash)s, 'UTF8')) "
    "OR checks + 1 >= max_checks THEN %(now)s ELSE ended_at END "
    "WHERE public_id = %(public_id)s AND status = %(pending)s AND checks < max_checks AND expires_at > %(now)s "
    "RETURNING id, status, checks, max_checks, phone), "
    f"a AS (INSERT INTO {_AUDIT_TABLE} (at, user_id, channel, token_name, action, object_type, object_id, "
    "before, after, reason, action_request_id, idempotency_key) "
    "SELECT %(now)s, %(user)s, %(channel)s, %(token)s, 'otp.check', 'verification', %(public_id)s, NULL, "
    "jsonb_build_object('valid', v.status = %(approved)s, 'status', v.status, 'checks', v.checks), '', NULL, '' "
    "FROM v), "
    f'c AS (INSERT INTO "{_COUNTER_TABLE}" (scope, "key", window_seconds, window_start, "count", expires_at) '
    "SELECT %(scope)s, left(v.phone, greatest(2, length(v.phone) - %(digits)s)), %(window)s, %(start)s, 1, "
    "%(expiry)s FROM v WHERE v.status = %(approved)s "
    'ON CONFLICT (scope, "key", window_seconds, window_start) '
    f'DO UPDATE SET "count" = "{_COUNTER_TABLE}"."count" + 1) '
    "SELECT status, checks, max_checks FROM v"
)


class _PreparedCursor(psycopg.Cursor):
    """Server-side binding, every statement prepared (Django runs psycopg with client-side binding
    and no prepared statements): PostgreSQL plans the check's statement once per connection."""

    def execute(
        self, query: Any, params: Any = None, *, prepare: bool | None = None, binary: bool | None = None
    ) -> Any:
        return super().execute(query, params, prepare=True, binary=binary)

    def _send_query_prepared(self, name: bytes, pgq: Any, *, binary: bool | None = None) -> None:
        # psycopg records the query it ran only for unprepared statements; Django's query log and
        # CaptureQueriesContext read it (last_executed_query), so record the prepared one too.
        self._query = pgq
        super()._send_query_prepared(name, pgq, binary=binary)


# Django opens psycopg connections with prepare_threshold None, which turns preparing off altogether:
# psycopg then ignores prepare=True and parses and plans the statement on every execute (two thirds of
# the check's time in PostgreSQL). A threshold no count reaches lets the explicit prepare=True through
# and still prepares nothing on its own; Django's own queries (client-side binding) never prepare.
_EXPLICIT_PREPARES_ONLY = 2**31


def _prepared_cursor() -> Any:
    """A Django cursor wrapper (query logging and execute wrappers apply) over a _PreparedCursor, on a
    connection that honours prepare=True (an operator's own prepare_threshold is left as it is)."""
    connection.ensure_connection()
    raw = connection.connection
    if raw.prepare_threshold is None:
        raw.prepare_threshold = _EXPLICIT_PREPARES_ONLY
    return connection._prepare_cursor(_PreparedCursor(raw))  # type: ignore[attr-defined]  # Django's own wrapping


def _check_fast(actor: Actor, verification_id: str, code: str) -> dict[str, Any] | None:
    """The check of a pending verification on PostgreSQL in one statement (_CHECK) and no explicit
    transaction. None when it counted nothing (unknown id, ended, expired or out of checks): the
    caller then runs the general path, which says why."""
    now = timezone.now()
    with _prepared_cursor() as cursor:
        cursor.execute(
            _CHECK,
            {
                "now": now,
                "hash": code_hash(verification_id=verification_id, code=code),
                "approved": VerificationStatus.APPROVED.value,
                "locked": VerificationStatus.LOCKED.value,
                "pending": VerificationStatus.PENDING.value,
                "user": actor.user_id,
                "channel": str(actor.channel),
                "token": actor.token_name,
                "public_id": verification_id,
                **abuse.verified_window(now),
            },
        )
        written = cursor.fetchone()
    if written is None:
        return None
    status, checks, max_checks = written
    return {
        "verification_id": verification_id,
        "status": status,
        "valid": status == VerificationStatus.APPROVED,
        "checks_used": checks,
        "checks_remaining": max(max_checks - checks, 0) if status == VerificationStatus.PENDING else 0,
    }


def otp_check(*, actor: Actor, verification_id: str, code: str) -> dict[str, Any]:
    """Check a code: approved once (single use), at most max_checks checks (then locked), never after
    expiry. The answer says the status, not how close a wrong code was."""
    if not actor.has_perm(CHECK_PERMISSION):
        raise permission_denied(CHECK_PERMISSION)
    if not isinstance(code, str) or not CODE_INPUT_RE.match(code):
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            "code must be 4-10 letters or digits.",
            field="code",
            hint="Send the code as typed.",
        )
    if connection.vendor == "postgresql":
        fast = _check_fast(actor, verification_id, code)
        if fast is not None:
            return fast
    closed: ApplicationError | None = None
    with transaction.atomic(durable=True):
        now = timezone.now()
        counted = _count_check(verification_id, now)
        if counted is None:
            verification = Verification.objects.filter(public_id=verification_id).first()
            if verification is None:
                raise not_found(
                    "verification", verification_id, field="verification_id", hint="Use the id otp.send returned."
                )
            if verification.status == VerificationStatus.PENDING and verification.expires_at <= now:
                _expire_if_due(verification.pk, now)
                verification.status = VerificationStatus.EXPIRED
                otp_bodies_scrub(verification_ids=[verification.pk])
            closed = _closed_error(verification)
        else:
            verification = counted
            valid = code_matches(verification_id=verification_id, code=code, stored_hash=verification.code_hash)
            if valid:
                Verification.objects.filter(pk=verification.pk, status=VerificationStatus.PENDING).update(
                    status=VerificationStatus.APPROVED, ended_at=now, updated_at=now
                )
                verification.status = VerificationStatus.APPROVED
            elif verification.checks >= verification.max_checks:
                Verification.objects.filter(pk=verification.pk, status=VerificationStatus.PENDING).update(
                    status=VerificationStatus.LOCKED, ended_at=now, updated_at=now
                )
                verification.status = VerificationStatus.LOCKED
            if verification.status in ENDED:
                otp_bodies_scrub(verification_ids=[verification.pk])
            if verification.status == VerificationStatus.APPROVED:
                # Counted in this transaction: an approval that rolls back is not counted.
                abuse.abuse_record_verified(phone=verification.phone)
            audit_record(
                actor=actor,
                action="otp.check",
                object_type="verification",
                object_id=verification_id,
                after={"valid": valid, "status": verification.status, "checks": verification.checks},
            )
    if closed is not None:
        raise closed
    return {
        "verification_id": verification.public_id,
        "status": verification.status,
        "valid": verification.status == VerificationStatus.APPROVED,
        "checks_used": verification.checks,
        "checks_remaining": max(verification.max_checks - verification.checks, 0)
        if verification.status == VerificationStatus.PENDING
        else 0,
    }


def otp_verification_cancel(*, actor: Actor, verification_id: str) -> dict[str, Any]:
    """Cancel a pending verification (the person gave up, or the business chose another way): no
    check passes afterwards and a new send starts a new verification."""
    if not (actor.has_perm(CHECK_PERMISSION) or actor.has_perm(SEND_PERMISSION)):
        raise permission_denied(CHECK_PERMISSION)
    with transaction.atomic(durable=True):
        now = timezone.now()
        # Conditional: a verification approved, locked or expired a moment ago stays so.
        canceled = Verification.objects.filter(
            public_id=verification_id, status=VerificationStatus.PENDING, expires_at__gt=now
        ).update(status=VerificationStatus.CANCELED, ended_at=now, updated_at=now)
        verification = Verification.objects.filter(public_id=verification_id).first()
        if verification is None:
            raise not_found(
                "verification", verification_id, field="verification_id", hint="Use the id otp.send returned."
            )
        if not canceled:
            verification.status = verification_status(verification, now)
            raise _closed_error(verification)
        otp_bodies_scrub(verification_ids=[verification.pk])
        audit_record(
            actor=actor,
            action="otp.cancel",
            object_type="verification",
            object_id=verification.public_id,
            before={"status": VerificationStatus.PENDING},
            after={"status": VerificationStatus.CANCELED},
        )
    return verification_payload(verification)


def verification_status(verification: Verification, now: Any = None) -> str:
    """The status as of now: a pending verification past its expiry is expired."""
    now = now or timezone.now()
    if verification.status == VerificationStatus.PENDING and verification.expires_at <= now:
        return VerificationStatus.EXPIRED
    return verification.status


def verification_payload(verification: Verification, *, message_id: int | None = None) -> dict[str, Any]:
    status = verification_status(verification)
    pending = status == VerificationStatus.PENDING
    out = {
        "verification_id": verification.public_id,
        "template_id": verification.template_id,
        "phone": phone_mask(verification.phone),
        "country": verification.country,
        "locale": verification.locale,
        "status": status,
        "expires_at": verification.expires_at.isoformat(),
        "sends_used": verification.sends,
        "sends_remaining": max(verification.max_sends - verification.sends, 0) if pending else 0,
        "checks_used": verification.checks,
        "checks_remaining": max(verification.max_checks - verification.checks, 0) if pending else 0,
    }
    if message_id is not None:
        out["message_id"] = message_id
    return out
