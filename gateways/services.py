"""Writes of the gateways app: sender-ID applications (governed), bind worker status reports."""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from django.db.models import Max
from django.utils import timezone
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from compliance.governance import Checked, GovernedAction, governed_write, register_action
from compliance.models import ActionRequest, ActionType
from gateways.errors import GatewayErrorCode
from gateways.models import BindWorkerStatus, SenderId, SenderIdApplication, SenderIdStatus
from gateways.rules import SSRS_REGION, sender_id_kind
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.errors import ApplicationError, ErrorCode, from_pydantic, not_found, permission_denied

APPLY_PERMISSION = "gateways.add_senderidapplication"
HK_BR_RE = re.compile(r"^\d{8}$")
# Names reserved for public bodies and regulated industries: an applicant may use them only
# when its own brand carries the same name (anti-impersonation).
PROTECTED_TERMS = ("GOV", "OFCA", "POLICE", "HKMA", "IRD", "BANK", "HSBC", "OCTOPUS")
REQUIRED_DOCUMENTS = ("business_registration", "authorisation_letter")


class Document(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    name: Annotated[str, Field(min_length=2, max_length=100)]
    status: Literal["provided", "missing", "verified"]
    reference: Annotated[str, Field(max_length=200)] = ""


class SenderIdApplicationInput(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    sender_id: Annotated[str, Field(min_length=1, max_length=16)]
    brand: Annotated[str, Field(min_length=1, max_length=100)]
    company_name: Annotated[str, Field(min_length=2, max_length=200)]
    company_registration_no: Annotated[str, Field(min_length=1, max_length=50)]
    purpose: Annotated[str, Field(min_length=10, max_length=2000)]
    regions: Annotated[list[Annotated[str, Field(pattern=r"^[A-Z]{2}$")]], Field(min_length=1)]
    documents: list[Document]
    reason: Annotated[str, Field(min_length=5, max_length=1000)]
    reference: Annotated[str, Field(max_length=32)] = ""


def _validated(payload: dict[str, Any]) -> SenderIdApplicationInput:
    try:
        return SenderIdApplicationInput.model_validate(payload)
    except ValidationError as exc:
        raise from_pydantic(exc) from None


def _check(actor: Actor, payload: dict[str, Any]) -> Checked:
    data = _validated(payload)
    kind = sender_id_kind(data.sender_id)
    if data.sender_id.startswith("#") and SSRS_REGION not in data.regions:
        raise ApplicationError(
            GatewayErrorCode.SENDER_ID_REGION_MISMATCH,
            "A '#' sender ID is registered under Hong Kong's SSRS; HK must be among the regions.",
            field="regions",
            hint="Add HK, or apply for a sender ID without '#' for other regions.",
        )
    if SSRS_REGION in data.regions and not HK_BR_RE.match(data.company_registration_no):
        raise ApplicationError(
            GatewayErrorCode.COMPANY_REGISTRATION_INVALID,
            "A Hong Kong application needs the 8-digit Business Registration number.",
            field="company_registration_no",
            hint="Use the first 8 digits of the BR certificate number.",
        )
    upper_id, upper_brand = data.sender_id.upper(), f"{data.brand} {data.company_name}".upper()
    for term in PROTECTED_TERMS:
        if term in upper_id and term not in upper_brand:
            raise ApplicationError(
                GatewayErrorCode.SENDER_ID_IMPERSONATION,
                f"{data.sender_id!r} contains {term!r}, which the brand {data.brand!r} does not carry.",
                field="sender_id",
                hint="Apply only for names of your own brand; names of public bodies or banks need their authority.",
            )
    provided = {d.name for d in data.documents if d.status in {"provided", "verified"}}
    missing = [name for name in REQUIRED_DOCUMENTS if name not in provided]
    if missing:
        raise ApplicationError(
            GatewayErrorCode.DOCUMENTS_MISSING,
            f"Documents not provided: {', '.join(missing)}.",
            field="documents",
            hint="Attach the company's Business Registration and a letter authorising you to act for the brand.",
            details={"missing": missing},
        )
    previous = None
    if data.reference:
        previous = SenderIdApplication.objects.filter(reference=data.reference).order_by("-version").first()
        if previous is None:
            raise ApplicationError(
                ErrorCode.NOT_FOUND,
                f"No application {data.reference!r}.",
                field="reference",
                hint="Leave reference empty for a new application.",
            )
        if previous.sender_id != data.sender_id:
            raise ApplicationError(
                ErrorCode.INVALID_ARGUMENT,
                "An update keeps the sender ID of the application; apply anew for another ID.",
                field="sender_id",
            )
    existing = SenderId.objects.filter(value=data.sender_id).first()
    if existing is not None and existing.status == SenderIdStatus.REGISTERED and previous is None:
        raise ApplicationError(
            GatewayErrorCode.SENDER_ID_ALREADY_REGISTERED,
            f"{data.sender_id!r} is already registered.",
            field="sender_id",
            hint="See sms_marketing.sender_ids.list.",
        )
    return Checked(facts={"kind": kind, "regions": data.regions, "update_of": data.reference or None})


def _execute(actor: Actor, payload: dict[str, Any], request: ActionRequest | None, context: Any) -> dict[str, Any]:
    data = _validated(payload)
    reference = data.reference or f"SID-{secrets.token_hex(6).upper()}"
    last = SenderIdApplication.objects.filter(reference=reference).aggregate(v=Max("version"))["v"] or 0
    application = SenderIdApplication.objects.create(
        reference=reference,
        version=last + 1,
        sender_id=data.sender_id,
        brand=data.brand,
        company_name=data.company_name,
        company_registration_no=data.company_registration_no,
        purpose=data.purpose,
        regions=data.regions,
        documents=[d.model_dump() for d in data.documents],
        reason=data.reason,
        created_by=actor.user,
    )
    sender, created = SenderId.objects.get_or_create(
        value=data.sender_id,
        defaults={"kind": sender_id_kind(data.sender_id), "brand": data.brand, "regions": data.regions},
    )
    if not created and sender.status != SenderIdStatus.REGISTERED:
        sender.brand, sender.regions, sender.status = data.brand, data.regions, SenderIdStatus.PENDING
        sender.save(update_fields=["brand", "regions", "status"])
    audit_record(
        actor=actor,
        action="sender_id.apply",
        object_type="sender_id_application",
        object_id=f"{reference}v{application.version}",
        after=payload,
        reason=data.reason,
        action_request_id=request.pk if request else None,
    )
    return {
        "reference": reference,
        "version": application.version,
        "sender_id": data.sender_id,
        "status": application.status,
        "sender_id_status": sender.status,
        "note": (
            "The sender ID stays pending (not usable for live sends) until the regulator's registration is recorded."
        ),
    }


register_action(
    GovernedAction(
        action=ActionType.SENDER_ID_APPLY,
        permission=APPLY_PERMISSION,
        check=_check,
        execute=_execute,
        summary=lambda p, f: (
            f"Sender ID application {p.get('sender_id')} for {p.get('brand')} ({', '.join(p.get('regions', []))})"
        ),
    )
)


def sender_id_apply(*, actor: Actor, idempotency_key: str | None, **fields: Any) -> dict[str, Any]:
    payload = _validated(fields).model_dump(mode="json")
    return governed_write(
        actor=actor,
        action=ActionType.SENDER_ID_APPLY,
        payload=payload,
        idempotency_key=idempotency_key,
        reason=payload["reason"],
    )


# A worker that has not reported for this long is long gone: its row is dropped when a worker of
# the same gateway starts (gateways.selectors.bind_status takes it for dead much sooner).
BIND_WORKER_FORGET_AFTER = timedelta(days=1)


def bind_worker_status_record(
    *,
    actor: Actor,
    gateway_id: int,
    owner: str,
    host: str,
    pid: int,
    state: str,
    state_since: datetime,
    started_at: datetime,
    last_error: str,
    failing_over_to: str,
    stats: dict[str, Any],
    starting: bool = False,
) -> None:
    """Record what a bind worker (``actor``, identified by ``owner``) says about its bind: on
    every change and as a heartbeat (gateways.smpp.worker). ``starting``: the worker starts, so
    the rows of this gateway's workers silent for a day are dropped first.

    Operational telemetry, not a business write: no audit row (a heartbeat every few seconds per
    worker would swamp the log). What a worker does to messages (fail-over, unknown, requeue,
    suppression) is audited by the delivery services it calls. No transaction of its own: each
    statement stands alone, and a heartbeat costs one upsert."""
    now = timezone.now()
    if starting:
        BindWorkerStatus.objects.filter(gateway_id=gateway_id, heartbeat_at__lt=now - BIND_WORKER_FORGET_AFTER).delete()
    BindWorkerStatus.objects.update_or_create(
        owner=owner,
        defaults={
            "gateway_id": gateway_id,
            "host": host[:100],
            "pid": pid,
            "state": state,
            "state_since": state_since,
            "heartbeat_at": now,
            "started_at": started_at,
            "last_error": last_error[:300],
            "failing_over_to": failing_over_to,
            "stats": stats,
        },
    )


# --- the per-gateway webhook signing secret -------------------------------------------------------

CHANGE_GATEWAY_PERMISSION = "gateways.change_gateway"


def gateway_webhook_secret_rotate(*, actor: Actor, gateway_id: int) -> dict[str, Any]:
    """A new webhook signing secret for the gateway. Callback URLs signed with the old one work
    for WEBHOOK_SECRET_GRACE more, then only the new URLs do (give them to Kannel: the gateway
    page shows them). The audit row records the rotation, never a secret."""
    from django.db import transaction

    from gateways.models import WEBHOOK_SECRET_GRACE, Gateway, webhook_secret_new

    if not actor.has_perm(CHANGE_GATEWAY_PERMISSION):
        raise permission_denied(CHANGE_GATEWAY_PERMISSION)
    with transaction.atomic(durable=True):
        gateway = Gateway.objects.select_for_update(of=("self",)).filter(pk=gateway_id).first()
        if gateway is None:
            raise not_found("gateway", gateway_id, field="gateway_id", hint="See sms_marketing.gateways.list.")
        now = timezone.now()
        Gateway.objects.filter(pk=gateway.pk).update(
            webhook_secret=webhook_secret_new(),
            webhook_secret_previous=gateway.webhook_secret,
            webhook_secret_rotated_at=now,
        )
        audit_record(
            actor=actor,
            action="gateway.webhook_secret_rotate",
            object_type="gateway",
            object_id=gateway.pk,
            after={"gateway": gateway.code, "previous_accepted_until": (now + WEBHOOK_SECRET_GRACE).isoformat()},
        )
    return {"gateway": gateway.code, "rotated_at": now.isoformat()}
