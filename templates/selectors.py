"""Reads of the templates app: template lists and versions.

The content rules are ``templates.content_rules``, copy fit ``templates.copy_fit`` and the
short links ``templates.short_links``.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from compliance.models import ActionRequest, ActionType, RequestState
from smsplatform.config_service import platform_config_data
from smsplatform.kernel.errors import not_found
from smsplatform.kernel.versioning import version_token
from templates.content_rules import content_of, render, required_wording
from templates.copy_fit import fit_scenario, longest_values, short_url_sample
from templates.models import Template, TemplateVersion

LABEL = "sms_templates.template"

# --- templates.list --------------------------------------------------------------


def _pending_template_requests() -> dict[int | None, list[int]]:
    pending: dict[int | None, list[int]] = {}
    rows = ActionRequest.objects.filter(action=ActionType.TEMPLATE_SAVE, state=RequestState.PENDING).values_list(
        "pk", "payload", "expires_at"
    )
    now = timezone.now()
    for pk, payload, expires_at in rows:
        if expires_at > now:
            pending.setdefault((payload or {}).get("template_id"), []).append(pk)
    return pending


def template_version_payload(version: TemplateVersion, *, config: dict[str, Any]) -> dict[str, Any]:
    content = content_of(version)
    example = render(version.body, {f["name"]: f["example"] for f in content["fields"]})
    _, example_result = fit_scenario(example, field="body", smart_encoding=False)
    longest = render(version.body, longest_values(content["fields"], url_value=short_url_sample(config, True)))
    _, longest_result = fit_scenario(longest, field="body", smart_encoding=False)
    wording = required_wording(
        body=version.body, purpose=version.purpose, language=version.language, brand=version.brand, config=config
    )
    return {
        "template_id": version.template_id,
        "version": version.version,
        "version_id": version.pk,
        **content,
        "characters": len(version.body),
        "example_text": example,
        "encoding": example_result.encoding,
        "segments_example": example_result.segments,
        "segments_longest": longest_result.segments,
        "opt_out_text": wording["statements"],
        "required_wording": {"required": wording["required"], "missing": wording["missing"]},
        "usable": not wording["missing"],
        "approval_status": version.approval_status,
        "action_request_id": version.action_request_id,
        "reason": version.reason,
        "created_at": version.created_at.isoformat(),
        "created_by": version.created_by.username if version.created_by else None,
    }


def templates_list(
    *,
    template_id: int | None = None,
    purpose: str | None = None,
    language: str | None = None,
    name_contains: str | None = None,
    include_versions: bool = False,
    limit: int = 50,
) -> dict[str, Any]:
    config = platform_config_data()
    qs = Template.objects.order_by("name")
    if template_id is not None:
        qs = qs.filter(pk=template_id)
        if not qs.exists():
            raise not_found(
                "template", template_id, field="template_id", hint="Call sms_marketing.templates.list without filters."
            )
    if purpose:
        qs = qs.filter(purpose=purpose)
    if language:
        qs = qs.filter(language=language)
    if name_contains:
        qs = qs.filter(name__icontains=name_contains)
    total = qs.count()
    templates = list(qs[: max(1, min(limit, 200))])
    versions = {
        (v.template_id, v.version): v
        for v in TemplateVersion.objects.filter(template__in=templates).select_related("created_by")
    }
    pending = _pending_template_requests()
    out = []
    for template in templates:
        current = versions[(template.pk, template.version)]
        item = {
            **template_version_payload(current, config=config),
            "base_version_token": version_token(LABEL, template.pk, template.version),
            "pending_action_request_ids": pending.get(template.pk, []),
            "updated_at": template.updated_at.isoformat(),
        }
        if include_versions or template_id is not None:
            item["versions"] = [
                {
                    "version": v.version,
                    "version_id": v.pk,
                    "approval_status": v.approval_status,
                    "action_request_id": v.action_request_id,
                    "reason": v.reason,
                    "created_at": v.created_at.isoformat(),
                    "created_by": v.created_by.username if v.created_by else None,
                }
                for (tid, _), v in sorted(versions.items(), key=lambda kv: -kv[0][1])
                if tid == template.pk
            ]
        out.append(item)
    return {
        "templates": out,
        "count": len(out),
        "total": total,
        "pending_new_template_request_ids": pending.get(None, []),
        "note": (
            "Campaigns pin a version_id. Use a template whose purpose fits the message; marketing templates keep "
            "the brand and the unsubscribe statement in Chinese and English. 'usable' is false when the current "
            "rules (config) are not met; save a new version first. Updates need base_version_token."
        ),
    }


def template_version_get(*, version_id: int) -> dict[str, Any]:
    """One pinned version (for campaigns)."""
    version = TemplateVersion.objects.select_related("created_by").filter(pk=version_id).first()
    if version is None:
        raise not_found("template version", version_id, field="template_version_id", hint="See templates.list.")
    return template_version_payload(version, config=platform_config_data())


def template_versions_diff(*, template_id: int, from_version: int, to_version: int) -> dict[str, Any]:
    """Two versions of one template side by side: each content field that changed, and the body's
    line diff (unified, as lines marked ' ', '-' or '+')."""
    import difflib

    rows = {
        v.version: v
        for v in TemplateVersion.objects.filter(template_id=template_id, version__in=[from_version, to_version])
    }
    for number, field in ((from_version, "from_version"), (to_version, "to_version")):
        if number not in rows:
            raise not_found("template version", number, field=field, hint="See templates.list with template_id.")
    old, new = rows[from_version], rows[to_version]
    fields = ("name", "purpose", "language", "brand", "max_segments", "fields")
    changed = [
        {"field": f, "from": getattr(old, f), "to": getattr(new, f)}
        for f in fields
        if getattr(old, f) != getattr(new, f)
    ]
    lines = list(difflib.ndiff(old.body.splitlines(), new.body.splitlines()))
    body = [{"mark": line[0], "text": line[2:]} for line in lines if line[:1] in (" ", "-", "+")]
    return {
        "template_id": template_id,
        "from_version": from_version,
        "to_version": to_version,
        "changed_fields": changed,
        "body": body,
        "body_changed": old.body != new.body,
    }
