"""Templates pages: thin views over templates.selectors (list, versions, diff), templates.services
(template_save: a new version, maybe held for approval) and copy_fit_preview (the live counter)."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from smsplatform.kernel.errors import ApplicationError, ErrorCode
from smsplatform.staff.base import FieldErrors, new_key, staff_actor, staff_view
from templates.copy_fit import copy_fit_preview
from templates.models import Language, Purpose
from templates.selectors import template_versions_diff, templates_list
from templates.services import template_save

VIEW = "sms_templates.view_template"
ADD = "sms_templates.add_template"
FIELDS = ("name", "purpose", "language", "body", "brand", "max_segments", "fields", "reason")


@staff_view(VIEW)
def template_list(request: HttpRequest) -> HttpResponse:
    listing = templates_list(name_contains=request.GET.get("q", "").strip() or None, limit=200)
    return render(request, "staff/templates/list.html", {"listing": listing, "q": request.GET.get("q", "")})


def _current(template_id: int) -> dict[str, Any]:
    item = templates_list(template_id=template_id)["templates"][0]
    return dict(item)


@staff_view(VIEW)
def edit(request: HttpRequest, template_id: int | None = None) -> HttpResponse:
    """GET: the current version in the editor, its versions listed. POST: template_save with the
    version token read on GET (a newer save makes it stale: the page says so, next to the body)."""
    errors = FieldErrors(FIELDS)
    current = None
    if template_id is not None:
        try:
            current = _current(template_id)
        except ApplicationError as error:
            return render(request, "staff/templates/missing.html", {"error": error.as_dict()}, status=404)
    if request.method != "POST":
        values = {f: str(current.get(f, "")) if current else "" for f in FIELDS}
        values["reason"] = ""
        values["fields"] = json.dumps(current.get("fields") or [], ensure_ascii=False) if current else "[]"
        if not current:
            values.update(purpose=Purpose.MARKETING, language=Language.BILINGUAL, max_segments="3")
        values.update(key=new_key("template"), token=current["base_version_token"] if current else "")
        return _page(request, values, errors, current)
    if not request.user.has_perm(ADD):
        return render(request, "staff/forbidden.html", {"message": "", "permission": ADD}, status=403)
    values = {f: request.POST.get(f, "") for f in FIELDS}
    values.update(key=request.POST.get("key", ""), token=request.POST.get("token", ""))
    content: dict[str, Any] = {k: values[k] for k in ("name", "purpose", "language", "body", "brand")}
    try:
        content["fields"] = json.loads(values["fields"] or "[]")
    except ValueError:
        errors.add(
            ApplicationError(
                ErrorCode.VALIDATION_ERROR,
                "fields must be JSON: a list of {name, type, max_length, example}.",
                field="fields",
                hint='e.g. [{"name": "link", "type": "url", "max_length": 40, "example": "https://s.example.hk/s/abc"}]',
            )
        )
        return _page(request, values, errors, current, status=400)
    if values["max_segments"].strip().isdigit():
        content["max_segments"] = int(values["max_segments"])
    try:
        answer = template_save(
            actor=staff_actor(request),
            idempotency_key=values["key"],
            template_id=template_id,
            base_version_token=values["token"] or None,
            content=content,
            reason=values["reason"],
        )
    except ApplicationError as error:
        errors.add(error, aliases={"base_version_token": "body", "content": "body", "template_id": "name"})
        return _page(request, values, errors, current, status=400)
    return render(request, "staff/templates/answer.html", {"answer": answer})


def _page(
    request: HttpRequest, values: dict[str, str], errors: FieldErrors, current: dict[str, Any] | None, status: int = 200
) -> HttpResponse:
    context = {
        "v": values,
        "errors": errors,
        "current": current,
        "purposes": Purpose.choices,
        "languages": Language.choices,
        "may_save": request.user.has_perm(ADD),
    }
    return render(request, "staff/templates/edit.html", context, status=status)


@staff_view("sms_templates.fit_preview")
def fit_part(request: HttpRequest) -> HttpResponse:
    """copy.fit_preview of the body being edited (the template's declared fields at their longest)."""
    body = request.POST.get("body", "")
    if not body:
        return render(request, "staff/templates/_fit.html", {"empty": True})
    args: dict[str, Any] = {"text": body, "purpose": request.POST.get("purpose") or None}
    if request.POST.get("brand", "").strip():
        args["brand"] = request.POST["brand"].strip()
    if request.POST.get("max_segments", "").isdigit():
        args["max_segments"] = int(request.POST["max_segments"])
    try:
        fields = json.loads(request.POST.get("fields") or "[]")
    except ValueError:
        fields = None
    if isinstance(fields, list) and fields:
        args["fields"] = fields
    try:
        fit = copy_fit_preview(**args)
    except ApplicationError as error:
        return render(request, "staff/templates/_fit.html", {"error": error.as_dict()})
    return render(request, "staff/templates/_fit.html", {"fit": fit})


@staff_view(VIEW)
def diff(request: HttpRequest, template_id: int) -> HttpResponse:
    try:
        current = _current(template_id)
        newest = int(current["version"])
        to_version = int(request.GET.get("to") or newest)
        from_version = int(request.GET.get("from") or max(1, to_version - 1))
        result = template_versions_diff(template_id=template_id, from_version=from_version, to_version=to_version)
    except (ApplicationError, ValueError) as error:
        message = error.message if isinstance(error, ApplicationError) else str(error)
        return render(request, "staff/templates/missing.html", {"error": {"message": message}}, status=400)
    context = {"current": current, "d": result, "numbers": [v["version"] for v in current.get("versions", [])]}
    return render(request, "staff/templates/diff.html", context)
