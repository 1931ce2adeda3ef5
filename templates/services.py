"""Writes of the templates app: template.save and short_link.create, both governed.

Each goes through ``governed_write``: the check re-validates everything against the
current configuration (also when an approver approves later) and reports whether
the write is sensitive; a policy with condition ``sensitive_content`` holds those.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from compliance.governance import Checked, GovernedAction, governed_write, register_action
from compliance.models import ActionRequest, ActionType
from smsplatform.config_service import platform_config_data
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.errors import ApplicationError, ErrorCode, not_found, permission_denied
from smsplatform.kernel.idempotency import check_key
from smsplatform.kernel.versioning import parse_version_token, stale_token_error, version_token
from smsplatform.models import Preview
from templates.content_rules import content_of, current_version, sensitive_changes, template_content_validate
from templates.errors import TemplateErrorCode
from templates.models import ShortLink, Template, TemplateVersion, VersionApproval
from templates.selectors import LABEL
from templates.short_links.preview import PREVIEW_KIND, short_link_payload, short_link_spec

ADD_TEMPLATE = "sms_templates.add_template"
CHANGE_TEMPLATE = "sms_templates.change_template"
ADD_SHORT_LINK = "sms_templates.add_shortlink"
CONTENT_KEYS = ("name", "purpose", "language", "body", "brand", "fields", "max_segments")


# --- template.save ------------------------------------------------------------------


def _template_for_update(payload: dict[str, Any]) -> Template:
    template = Template.objects.filter(pk=payload["template_id"]).first()
    if template is None:
        raise not_found(
            "template", payload["template_id"], field="template_id", hint="Call sms_marketing.templates.list."
        )
    return template


def _template_check(actor: Actor, payload: dict[str, Any]) -> Checked:
    config = platform_config_data()
    content = template_content_validate(payload["content"], config=config)
    old: TemplateVersion | None = None
    if payload.get("template_id") is not None:
        # Updating a template is a change permission (compliance); creating one is add (marketing).
        if not actor.has_perm(CHANGE_TEMPLATE):
            raise permission_denied(
                CHANGE_TEMPLATE, hint="Save it as a new template, or ask compliance to change this one."
            )
        template = _template_for_update(payload)
        expected = parse_version_token(payload.get("base_version_token"), label=LABEL, pk=template.pk)
        if expected != template.version:
            raise stale_token_error(label=LABEL, pk=template.pk, current_version=template.version)
        old = current_version(template)
        if content == content_of(old):
            raise ApplicationError(
                ErrorCode.VALIDATION_ERROR,
                "Nothing changed: the content equals the current version.",
                field="body",
                hint="Change something, or keep using the current version_id.",
            )
    others = Template.objects.filter(name=content["name"])
    if payload.get("template_id") is not None:
        others = others.exclude(pk=payload["template_id"])
    if others.exists():
        raise _name_taken(content["name"])
    reasons = sensitive_changes(content, old, config=config)
    return Checked(
        facts={
            "sensitive": bool(reasons),
            "sensitive_reasons": reasons,
            "template_id": payload.get("template_id"),
            "purpose": content["purpose"],
            "new_template": old is None,
        }
    )


def _name_taken(name: str) -> ApplicationError:
    return ApplicationError(
        TemplateErrorCode.NAME_TAKEN,
        f"A template named {name!r} exists.",
        field="name",
        hint="Choose another name, or update that template (templates.list gives its id and token).",
    )


def _template_execute(
    actor: Actor, payload: dict[str, Any], request: ActionRequest | None, context: Any
) -> dict[str, Any]:
    config = platform_config_data()
    content = template_content_validate(payload["content"], config=config)
    now = timezone.now()
    before: dict[str, Any] | None = None
    if payload.get("template_id") is None:
        try:
            # A savepoint: a concurrent save of the same name loses cleanly here.
            with transaction.atomic():
                template = Template.objects.create(
                    name=content["name"],
                    purpose=content["purpose"],
                    language=content["language"],
                    version=1,
                    created_by_id=actor.user_id,
                    created_at=now,
                    updated_at=now,
                )
        except IntegrityError:
            raise _name_taken(content["name"]) from None
    else:
        template = _template_for_update(payload)
        expected = parse_version_token(payload["base_version_token"], label=LABEL, pk=template.pk)
        before = content_of(current_version(template))
        # Compare-and-set on the version: of two savers holding one token, exactly one wins.
        try:
            with transaction.atomic():
                updated = Template.objects.filter(pk=template.pk, version=expected).update(
                    name=content["name"],
                    purpose=content["purpose"],
                    language=content["language"],
                    version=expected + 1,
                    updated_at=now,
                )
        except IntegrityError:
            raise _name_taken(content["name"]) from None
        if updated != 1:
            current = Template.objects.values_list("version", flat=True).get(pk=template.pk)
            raise stale_token_error(label=LABEL, pk=template.pk, current_version=current)
        template.refresh_from_db()
    version = TemplateVersion.objects.create(
        template=template,
        version=template.version,
        **content,
        approval_status=VersionApproval.APPROVED if request else VersionApproval.NOT_REQUIRED,
        action_request_id=request.pk if request else None,
        reason=payload.get("reason", ""),
        created_at=now,
        created_by_id=actor.user_id,
    )
    audit_record(
        actor=actor,
        action="template.save",
        object_type="template",
        object_id=template.pk,
        before=before,
        after={"version": version.version, "version_id": version.pk, **content},
        reason=payload.get("reason", ""),
        action_request_id=request.pk if request else None,
    )
    return {
        "template_id": template.pk,
        "version": version.version,
        "version_id": version.pk,
        "base_version_token": version_token(LABEL, template.pk, template.version),
        "approval_status": version.approval_status,
    }


def _template_summary(payload: dict[str, Any], facts: dict[str, Any]) -> str:
    what = "New template" if payload.get("template_id") is None else f"Template #{payload['template_id']}"
    reasons = ", ".join(facts.get("sensitive_reasons", [])) or "content"
    return f"{what} {payload['content'].get('name', '')!r} ({payload['content'].get('purpose')}): {reasons}"


register_action(
    GovernedAction(
        action=ActionType.TEMPLATE_SAVE,
        permission=ADD_TEMPLATE,
        check=_template_check,
        execute=_template_execute,
        summary=_template_summary,
    )
)


def template_save(
    *,
    actor: Actor,
    idempotency_key: str | None,
    template_id: int | None = None,
    base_version_token: str | None = None,
    content: dict[str, Any],
    reason: str = "",
) -> dict[str, Any]:
    """Save a new template, or a new immutable version of one (needs its base_version_token).

    On update, content keys left out keep their current value. May be held for approval when
    the change touches brand, OTP or compliance wording.
    """
    if not isinstance(content, dict):
        raise ApplicationError(ErrorCode.VALIDATION_ERROR, "content must be an object.", field="content")
    unknown = sorted(set(content) - set(CONTENT_KEYS))
    if unknown:
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            f"{unknown[0]} is not a template property.",
            field=unknown[0],
            hint=f"Properties: {', '.join(CONTENT_KEYS)}.",
        )
    merged = dict(content)
    if template_id is not None:
        template = Template.objects.filter(pk=template_id).first()
        if template is None:
            raise not_found("template", template_id, field="template_id", hint="Call sms_marketing.templates.list.")
        if not base_version_token:
            parse_version_token(base_version_token, label=LABEL, pk=template.pk)  # raises: required
        merged = {**content_of(current_version(template)), **content}
    # Freeze the validated, normalised content: that is what an approver sees and approves.
    frozen = template_content_validate(merged, config=platform_config_data())
    payload = {
        "template_id": template_id,
        "base_version_token": base_version_token,
        "content": frozen,
        "reason": reason,
    }
    return governed_write(
        actor=actor,
        action=ActionType.TEMPLATE_SAVE,
        payload=payload,
        idempotency_key=idempotency_key,
        reason=reason,
    )


# --- short_link.create --------------------------------------------------------------


def _claim_marker(idempotency_key: str) -> str:
    return "short_links.create:" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]


def _claim_preview(actor: Actor, payload: dict[str, Any]) -> Preview:
    """Lock the preview and claim it for this request.

    The claim is the request's idempotency key: the first run marks the preview used, and only
    the same request (its approval, which re-runs this check) may use it again. Another request,
    a preview of someone else, of another kind, expired or already used, is refused.
    """
    from smsplatform.kernel.previews import preview_consume

    marker = _claim_marker(payload["idempotency_key"])
    preview = (
        Preview.objects.select_for_update()
        .filter(pk=payload["short_link_preview_id"], user=actor.user, consumed_by=marker)
        .first()
    )
    if preview is not None:
        return preview
    return preview_consume(
        actor=actor,
        kind=PREVIEW_KIND,
        preview_id=payload["short_link_preview_id"],
        field="short_link_preview_id",
        consumer=marker,
    )


def _link_check(actor: Actor, payload: dict[str, Any]) -> Checked:
    preview = _claim_preview(actor, payload)
    spec = short_link_spec(preview.payload, config=platform_config_data())
    shown = preview.result
    # The link must be exactly what was previewed: a config change since (allow list, UTM
    # rules, short domain) that alters it means a new preview, never a silent difference.
    for key in ("target_url", "short_domain", "tracking", "per_recipient", "campaign_id"):
        if spec[key] != shown[key]:
            raise ApplicationError(
                TemplateErrorCode.PREVIEW_OUTDATED,
                f"The link would differ from the preview ({key}); nothing was created.",
                field="short_link_preview_id",
                hint="Call sms_marketing.short_links.preview again and create from the new id.",
                details={"changed": key},
            )
    if ShortLink.objects.filter(code=shown["code"]).exists():
        raise ApplicationError(
            ErrorCode.PREVIEW_ALREADY_USED,
            "The short code of this preview is taken.",
            field="short_link_preview_id",
            hint="Call sms_marketing.short_links.preview again.",
        )
    return Checked(
        facts={
            "sensitive": spec["sensitive"],
            "sensitive_reasons": spec["sensitive_reasons"],
            "landing_host": spec["landing_host"],
            "target_url": spec["target_url"],
            "short_url": shown["short_url"],
        }
    )


def _link_execute(actor: Actor, payload: dict[str, Any], request: ActionRequest | None, context: Any) -> dict[str, Any]:
    preview = _claim_preview(actor, payload)
    spec = short_link_spec(preview.payload, config=platform_config_data())
    shown = preview.result
    try:
        with transaction.atomic():
            link = ShortLink.objects.create(
                code=shown["code"],
                short_domain=shown["short_domain"],
                original_url=spec["original_url"],
                target_url=shown["target_url"],
                landing_host=spec["landing_host"],
                utm=spec["utm"],
                expires_at=datetime.fromisoformat(shown["expires_at"]),
                campaign_id=spec["campaign_id"],
                tracking=spec["tracking"],
                per_recipient=spec["per_recipient"],
                sensitive=spec["sensitive"],
                preview_id=preview.pk,
                action_request_id=request.pk if request else None,
                owner=actor.user,
                created_by=actor.user,
            )
    except IntegrityError:
        raise ApplicationError(
            ErrorCode.PREVIEW_ALREADY_USED,
            "A short link was already created from this preview, or its code is taken.",
            field="short_link_preview_id",
            hint="Call sms_marketing.short_links.preview again.",
        ) from None
    after = short_link_payload(link)
    audit_record(
        actor=actor,
        action="short_link.create",
        object_type="short_link",
        object_id=link.pk,
        after={**after, "sensitive_reasons": spec["sensitive_reasons"], "preview_id": str(preview.pk)},
        reason=payload.get("reason", ""),
        action_request_id=request.pk if request else None,
    )
    return after


def _link_summary(payload: dict[str, Any], facts: dict[str, Any]) -> str:
    reasons = ", ".join(facts.get("sensitive_reasons", []))
    return f"Short link {facts.get('short_url')} -> {facts.get('target_url')}" + (f" ({reasons})" if reasons else "")


register_action(
    GovernedAction(
        action=ActionType.SHORT_LINK_CREATE,
        permission=ADD_SHORT_LINK,
        check=_link_check,
        execute=_link_execute,
        summary=_link_summary,
    )
)


def short_link_create(
    *, actor: Actor, short_link_preview_id: str, idempotency_key: str | None, reason: str = ""
) -> dict[str, Any]:
    """Create the link a short_links.preview showed; only its id is taken, so nothing can widen it."""
    key = check_key(idempotency_key)
    try:
        preview_id = str(uuid.UUID(str(short_link_preview_id)))
    except ValueError:
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            "short_link_preview_id is not a preview id.",
            field="short_link_preview_id",
            hint="Call sms_marketing.short_links.preview and pass the id it returns.",
        ) from None
    payload = {"short_link_preview_id": preview_id, "idempotency_key": key, "reason": reason}
    return governed_write(
        actor=actor,
        action=ActionType.SHORT_LINK_CREATE,
        payload=payload,
        idempotency_key=key,
        reason=reason,
    )
