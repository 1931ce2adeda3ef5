"""Reads of the OTP app: otp_templates.list and a verification's status. No read returns a code, a
code hash or a full phone number."""

from __future__ import annotations

from typing import Any

from campaigns.otp.models import OtpTemplate, OtpTemplateVersion, Verification, VerificationSend
from campaigns.otp.services import CHECK_PERMISSION, SEND_PERMISSION, TEMPLATE_LABEL, verification_payload
from compliance.models import ActionRequest, RequestState
from gateways.models import OutboundMessage
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.errors import not_found, permission_denied
from smsplatform.kernel.versioning import version_token

VIEW_TEMPLATES = "otp.view_otptemplate"
VIEW_VERIFICATIONS = "otp.view_verification"

APPROVAL_STATES = {
    RequestState.PENDING: "pending_approval",
    RequestState.EXECUTED: "approved",
    RequestState.REJECTED: "rejected",
    RequestState.EXPIRED: "expired",
    RequestState.FAILED: "failed",
}


def _version_data(version: OtpTemplateVersion, state: str) -> dict[str, Any]:
    return {
        "version_id": version.pk,
        "number": version.number,
        "approval_state": state,
        "action_request_id": version.action_request_id,
        "body_en": version.body_en,
        "body_zh_hant": version.body_zh_hant,
        "code_length": version.code_length,
        "alphabet": version.alphabet,
        "validity_minutes": version.validity_minutes,
        "max_checks": version.max_checks,
        "max_sends": version.max_sends,
        "limits": version.limits,
        "gateway": version.gateway or None,
        "fallback_gateway": version.fallback_gateway or None,
        "allowed_countries": version.allowed_countries,
        "sender_id": version.sender_id,
        "single_segment_required": version.single_segment_required,
    }


def otp_templates_list(*, actor: Actor) -> list[dict[str, Any]]:
    """Every OTP template: its approved version (the one sends use), the latest requested version and
    its approval state, and the version token an update needs."""
    if not actor.has_perm(VIEW_TEMPLATES):
        raise permission_denied(VIEW_TEMPLATES)
    return _listing(list(OtpTemplate.objects.select_related("current_version").order_by("name")))


def template_listing(template: OtpTemplate) -> dict[str, Any]:
    """One template as otp_templates.list shows it (for the admin, which checks its own permissions)."""
    return _listing([template])[0]


def _listing(templates: list[OtpTemplate]) -> list[dict[str, Any]]:
    latest: dict[int, OtpTemplateVersion] = {}
    for version in OtpTemplateVersion.objects.filter(template__in=templates).order_by("template_id", "-pk"):
        latest.setdefault(version.template_id, version)
    request_ids = [v.action_request_id for v in latest.values() if v.action_request_id]
    states = dict(ActionRequest.objects.filter(pk__in=request_ids).values_list("pk", "state"))
    out = []
    for template in templates:
        current = template.current_version
        newest = latest.get(template.pk)
        newest_state = None
        if newest is not None:
            state = states.get(newest.action_request_id) if newest.action_request_id else None
            newest_state = APPROVAL_STATES.get(RequestState(state), "approved") if state else "approved"
        requested = newest if newest is not None and (current is None or newest.pk != current.pk) else None
        out.append(
            {
                "template_id": template.pk,
                "name": template.name,
                "purpose": template.purpose,
                "version": template.version,
                "base_version_token": version_token(TEMPLATE_LABEL, template.pk, template.version),
                "approval_state": "approved" if current is not None else (newest_state or "none"),
                "usable": current is not None,
                "approved": _version_data(current, "approved") if current is not None else None,
                "requested": _version_data(requested, newest_state or "") if requested is not None else None,
            }
        )
    return out


def verification_get(*, actor: Actor, verification_id: str) -> dict[str, Any]:
    """A verification's status, counters and the delivery state of each code's message."""
    if not any(actor.has_perm(p) for p in (VIEW_VERIFICATIONS, CHECK_PERMISSION, SEND_PERMISSION)):
        raise permission_denied(VIEW_VERIFICATIONS)
    verification = Verification.objects.filter(public_id=verification_id).first()
    if verification is None:
        raise not_found("verification", verification_id, field="verification_id", hint="Use the id otp.send returned.")
    sends = list(VerificationSend.objects.filter(verification=verification).order_by("number"))
    states = dict(OutboundMessage.objects.filter(pk__in=[s.message_id for s in sends]).values_list("pk", "state"))
    deliveries = [
        {
            "send": s.number,
            "message_id": s.message_id,
            "state": states.get(s.message_id),
            "sent_at": s.created_at.isoformat(),
        }
        for s in sends
    ]
    return {
        **verification_payload(verification),
        "delivery_state": deliveries[-1]["state"] if deliveries else None,
        "deliveries": deliveries,
    }


def verifications_list(*, actor: Actor, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The latest verifications, newest first, as verification_get shows them: the phone masked,
    the counters, never a code or its hash."""
    if not any(actor.has_perm(p) for p in (VIEW_VERIFICATIONS, CHECK_PERMISSION, SEND_PERMISSION)):
        raise permission_denied(VIEW_VERIFICATIONS)
    rows = Verification.objects.order_by("-created_at", "-pk")
    if status:
        rows = rows.filter(status=status)
    return [
        {**verification_payload(v), "template": v.template.name, "created_at": v.created_at.isoformat()}
        for v in rows.select_related("template")[: max(1, min(limit, 500))]
    ]
