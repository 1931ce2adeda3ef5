"""Contacts pages: thin views over contacts.selectors (search, get), contacts.services (upsert),
contacts.optouts (opt-out) and contacts.imports (CSV import); errors next to their fields."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from compliance.models import OptOutReason
from contacts.imports import contacts_import
from contacts.models import ConsentPurpose
from contacts.optouts import contact_opt_out
from contacts.selectors import audiences_visible, contact_get, contacts_search
from contacts.services import LANGUAGES, contacts_upsert
from smsplatform.kernel.errors import ApplicationError, ErrorCode
from smsplatform.staff.base import FieldErrors, new_key, staff_actor, staff_view

VIEW = "contacts.view_contact"
CHANGE = "contacts.change_contact"
IMPORT = "contacts.add_contact"
SEARCH_FIELDS = ("phone", "crm_key", "tag", "audience_id", "opted_out", "has_consent")
UPSERT_FIELDS = (
    "phone",
    "name",
    "language",
    "tags",
    "crm_key",
    "source",
    "consent_purpose",
    "consent_wording",
    "consent_source",
    "consent_obtained_at",
    "consent_proof_reference",
    "reason",
)
CONSENT_ALIASES = {
    "consent": "consent_wording",
    "consent.wording": "consent_wording",
    "consent.source": "consent_source",
    "consent.obtained_at": "consent_obtained_at",
    "consent.proof_reference": "consent_proof_reference",
    "consent.purpose": "consent_purpose",
    "contact_id": "phone",
    "base_version_token": "phone",
}


def _flag(value: str) -> bool | None:
    return {"yes": True, "no": False}.get(value)


@staff_view(VIEW)
def search(request: HttpRequest) -> HttpResponse:
    actor = staff_actor(request)
    query = {k: request.GET.get(k, "").strip() for k in SEARCH_FIELDS}
    errors = FieldErrors(SEARCH_FIELDS)
    result = None
    if any(query.values()):
        args: dict[str, Any] = {
            "phone": query["phone"] or None,
            "crm_key": query["crm_key"] or None,
            "tag": query["tag"] or None,
            "audience_id": int(query["audience_id"]) if query["audience_id"].isdigit() else None,
            "opted_out": _flag(query["opted_out"]),
            "has_consent": _flag(query["has_consent"]),
            "limit": 50,
        }
        try:
            result = contacts_search(actor=actor, **args)
        except ApplicationError as error:
            errors.add(error)
    audiences = list(audiences_visible(actor).order_by("name").values("id", "name")[:200])
    context = {"q": query, "result": result, "errors": errors, "audiences": audiences}
    template = "staff/contacts/_results.html" if getattr(request, "htmx", False) else "staff/contacts/search.html"
    return render(request, template, context, status=400 if errors else 200)


@staff_view(VIEW)
def detail(request: HttpRequest, contact_id: int) -> HttpResponse:
    try:
        contact = contact_get(actor=staff_actor(request), contact_id=contact_id)
    except ApplicationError as error:
        return render(request, "staff/contacts/missing.html", {"error": error.as_dict()}, status=error.http_status)
    context = {
        "c": contact,
        "reasons": OptOutReason.choices,
        "key": new_key("optout"),
        "may_change": request.user.has_perm(CHANGE),
    }
    return render(request, "staff/contacts/detail.html", context)


def _consent(values: dict[str, str]) -> dict[str, Any] | None:
    if not values["consent_wording"].strip():
        return None
    return {
        "purpose": values["consent_purpose"] or ConsentPurpose.MARKETING,
        "channel": "web",
        "wording": values["consent_wording"],
        "source": values["consent_source"],
        "obtained_at": values["consent_obtained_at"],
        "proof_reference": values["consent_proof_reference"],
    }


@staff_view(CHANGE)
def upsert(request: HttpRequest, contact_id: int | None = None) -> HttpResponse:
    """contacts.upsert: a new contact, or the named one with its version token (a newer opt-out or
    edit makes it stale and the page says so). Consent changes may be held for approval."""
    actor = staff_actor(request)
    errors = FieldErrors(UPSERT_FIELDS)
    current = None
    if contact_id is not None:
        try:
            current = contact_get(actor=actor, contact_id=contact_id)
        except ApplicationError as error:
            return render(request, "staff/contacts/missing.html", {"error": error.as_dict()}, status=error.http_status)
    if request.method != "POST":
        values = dict.fromkeys(UPSERT_FIELDS, "")
        if current:
            values.update(
                name=current["name"] or "",
                language=current["language"] or "",
                tags=", ".join(current["tags"]),
                crm_key=current["crm_key"] or "",
            )
        values.update(key=new_key("contact"), token=current["base_version_token"] if current else "")
        return _upsert_page(request, values, errors, current)
    values = {name: request.POST.get(name, "") for name in UPSERT_FIELDS}
    values.update(key=request.POST.get("key", ""), token=request.POST.get("token", ""))
    args: dict[str, Any] = {
        "name": values["name"].strip() or None,
        "language": values["language"] or None,
        "tags": [t.strip() for t in values["tags"].split(",") if t.strip()],
        "crm_key": values["crm_key"].strip() or None,
        "source": values["source"].strip() or "staff form",
        "consent": _consent(values),
        "reason": values["reason"],
    }
    if current:
        args.update(contact_id=current["contact_id"], base_version_token=values["token"])
    else:
        args["phone"] = values["phone"].strip()
    try:
        answer = contacts_upsert(actor=actor, idempotency_key=values["key"], **args)
    except ApplicationError as error:
        errors.add(error, aliases=CONSENT_ALIASES)
        return _upsert_page(request, values, errors, current, status=400)
    return render(request, "staff/contacts/answer.html", {"answer": answer, "what": "upsert"})


def _upsert_page(
    request: HttpRequest,
    values: dict[str, str],
    errors: FieldErrors,
    current: dict[str, Any] | None,
    status: int = 200,
) -> HttpResponse:
    context = {
        "v": values,
        "errors": errors,
        "current": current,
        "languages": LANGUAGES,
        "purposes": ConsentPurpose.choices,
    }
    return render(request, "staff/contacts/upsert.html", context, status=status)


@staff_view(CHANGE)
def opt_out(request: HttpRequest, contact_id: int) -> HttpResponse:
    """contacts.opt_out: takes effect at once (never held); the detail page shows it."""
    if request.method != "POST":
        return redirect("staff:contacts:detail", contact_id=contact_id)
    try:
        answer = contact_opt_out(
            actor=staff_actor(request),
            idempotency_key=request.POST.get("key", ""),
            contact_id=contact_id,
            reason=request.POST.get("reason", "") or None,
            source="staff form",
            note=request.POST.get("note", ""),
        )
    except ApplicationError as error:
        return render(request, "staff/contacts/answer.html", {"error": error.as_dict()}, status=error.http_status)
    return render(
        request, "staff/contacts/answer.html", {"answer": answer, "what": "opt_out", "contact_id": contact_id}
    )


@staff_view(IMPORT)
def import_csv(request: HttpRequest) -> HttpResponse:
    """contacts.import: the whole file is checked first; every bad row is listed with its line and
    field, and nothing is imported until all are right (large imports may be held for approval)."""
    actor = staff_actor(request)
    audiences = list(audiences_visible(actor).order_by("name").values("id", "name")[:200])
    values = {k: request.POST.get(k, "") for k in ("source", "audience_id", "reason")}
    context: dict[str, Any] = {"audiences": audiences, "v": values, "key": request.POST.get("key") or new_key("import")}
    if request.method == "POST":
        upload = request.FILES.get("file")
        text = request.POST.get("csv", "")
        try:
            if upload is not None:
                try:
                    text = upload.read().decode("utf-8-sig")
                except UnicodeDecodeError:
                    raise ApplicationError(
                        ErrorCode.VALIDATION_ERROR, "The file is not UTF-8 text.", field="file"
                    ) from None
            context["answer"] = contacts_import(
                actor=actor,
                csv_text=text,
                source=values["source"],
                idempotency_key=context["key"],
                audience_id=int(values["audience_id"]) if values["audience_id"].isdigit() else None,
                reason=values["reason"],
            )
        except ApplicationError as error:
            context["error"] = error.as_dict()
            context["row_errors"] = (error.details or {}).get("errors", [])
            context["error_count"] = (error.details or {}).get("error_count", 0)
    template = "staff/contacts/_import_result.html" if getattr(request, "htmx", False) else "staff/contacts/import.html"
    return render(request, template, context, status=400 if "error" in context else 200)
