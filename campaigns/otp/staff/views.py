"""OTP pages: thin views over campaigns.otp.selectors (otp_templates_list, template_listing,
verifications_list) and services.otp_template_save (a new template or version, always held for an
approver; the content rules -- no promotion, one segment, limits on every dimension -- are the
service's)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from campaigns.otp.models import Alphabet, OtpPurpose, OtpTemplate, VerificationStatus
from campaigns.otp.rules import DEFAULT_LIMITS, LIMIT_KEYS
from campaigns.otp.selectors import (
    VIEW_TEMPLATES,
    VIEW_VERIFICATIONS,
    otp_templates_list,
    template_listing,
    verifications_list,
)
from campaigns.otp.services import otp_template_save
from smsplatform.kernel.errors import ApplicationError
from smsplatform.staff.base import FieldErrors, new_key, staff_actor, staff_view

ADD = "otp.add_otptemplate"
TEXT_FIELDS = ("name", "purpose", "body_en", "body_zh_hant", "alphabet", "gateway", "fallback_gateway", "sender_id")
INT_FIELDS = ("code_length", "validity_minutes", "max_checks", "max_sends")
LIMIT_INPUTS = tuple(f"limit_{k}_{part}" for k in LIMIT_KEYS for part in ("count", "window_seconds"))
FIELDS = (
    *TEXT_FIELDS,
    *INT_FIELDS,
    "allowed_countries",
    "single_segment_required",
    "limits",
    *LIMIT_INPUTS,
    "reason",
)


@staff_view(VIEW_TEMPLATES)
def template_list(request: HttpRequest) -> HttpResponse:
    return render(request, "staff/otp/list.html", {"templates": otp_templates_list(actor=staff_actor(request))})


def _values_of(item: dict[str, Any] | None) -> dict[str, str]:
    """The form's values: the latest version (requested, else approved) of the template, or defaults."""
    version = (item or {}).get("requested") or (item or {}).get("approved") or {}
    values = {f: str(version.get(f) or "") for f in (*TEXT_FIELDS, *INT_FIELDS)}
    if item:
        values.update(name=item["name"], purpose=item["purpose"])
    else:
        values.update(code_length="6", alphabet=Alphabet.DIGITS, validity_minutes="10", max_checks="5", max_sends="5")
    values["allowed_countries"] = ", ".join(version.get("allowed_countries") or [])
    values["single_segment_required"] = "on" if version.get("single_segment_required", True) else ""
    limits = version.get("limits") or DEFAULT_LIMITS
    for k in LIMIT_KEYS:
        for part in ("count", "window_seconds"):
            values[f"limit_{k}_{part}"] = str((limits.get(k) or {}).get(part, ""))
    values["reason"] = ""
    return values


def _number(raw: str) -> Any:
    raw = raw.strip()
    return int(raw) if raw.isdigit() else raw  # anything else goes on for the service to refuse by name


def _content(values: dict[str, str]) -> dict[str, Any]:
    content: dict[str, Any] = {f: values[f].strip() for f in TEXT_FIELDS}
    content.update({f: _number(values[f]) for f in INT_FIELDS if values[f].strip()})
    content["allowed_countries"] = [c.strip().upper() for c in values["allowed_countries"].split(",") if c.strip()]
    content["single_segment_required"] = values["single_segment_required"] == "on"
    content["limits"] = {
        k: {part: _number(values[f"limit_{k}_{part}"]) for part in ("count", "window_seconds")} for k in LIMIT_KEYS
    }
    return content


@staff_view(VIEW_TEMPLATES)
def edit(request: HttpRequest, template_id: int | None = None) -> HttpResponse:
    """GET: the latest version in the form. POST: otp_template_save (held for an approver)."""
    item = None
    if template_id is not None:
        template = OtpTemplate.objects.select_related("current_version").filter(pk=template_id).first()
        if template is None:
            return render(request, "staff/otp/missing.html", {"message": f"OTP template {template_id}"}, status=404)
        item = template_listing(template)
    errors = FieldErrors(FIELDS)
    if request.method != "POST":
        values = {
            **_values_of(item),
            "key": new_key("otp-template"),
            "token": item["base_version_token"] if item else "",
        }
        return _page(request, values, errors, item)
    if not request.user.has_perm(ADD):
        return render(request, "staff/forbidden.html", {"message": "", "permission": ADD}, status=403)
    values = {f: request.POST.get(f, "") for f in FIELDS}
    values.update(key=request.POST.get("key", ""), token=request.POST.get("token", ""))
    try:
        answer = otp_template_save(
            actor=staff_actor(request),
            idempotency_key=values["key"],
            content=_content(values),
            template_id=template_id,
            base_version_token=values["token"] or None,
            reason=values["reason"],
        )
    except ApplicationError as error:
        aliases = {f"limits.{k}": f"limit_{k}_count" for k in LIMIT_KEYS}
        aliases.update({"base_version_token": "name", "template_id": "name", "content": "name"})
        errors.add(error, aliases=aliases)
        return _page(request, values, errors, item, status=400)
    return render(request, "staff/otp/answer.html", {"answer": answer, "item": item})


def _page(
    request: HttpRequest, values: dict[str, str], errors: FieldErrors, item: dict[str, Any] | None, status: int = 200
) -> HttpResponse:
    limits = []
    for k in LIMIT_KEYS:
        count, window = f"limit_{k}_count", f"limit_{k}_window_seconds"
        limits.append(
            {
                "key": k,
                "count": count,
                "count_value": values.get(count, ""),
                "window": window,
                "window_value": values.get(window, ""),
                "errors": errors.by_field.get(count, []) + errors.by_field.get(window, []),
            }
        )
    context = {
        "v": values,
        "errors": errors,
        "item": item,
        "purposes": OtpPurpose.choices,
        "alphabets": Alphabet.choices,
        "limits": limits,
        "may_save": request.user.has_perm(ADD),
    }
    return render(request, "staff/otp/edit.html", context, status=status)


@staff_view(VIEW_VERIFICATIONS)
def verifications(request: HttpRequest) -> HttpResponse:
    status = request.GET.get("status") or None
    if status not in VerificationStatus.values:
        status = None
    rows = verifications_list(actor=staff_actor(request), status=status, limit=200)
    context = {"rows": rows, "status": status or "", "statuses": VerificationStatus.choices}
    return render(request, "staff/otp/verifications.html", context)
