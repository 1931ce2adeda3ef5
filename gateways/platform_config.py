"""The governed config.update action: change named settings of the platform configuration.

The read side (``platform_config_data``, ``platform_config_get``) is the kernel's
(smsplatform/config_service.py). The write lives here because it checks that the defaults name
an enabled gateway and a registered sender ID: gateways is the lowest app that may see them.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from pydantic import ValidationError

from compliance.governance import Checked, GovernedAction, governed_write, register_action
from compliance.models import ActionRequest, ActionType
from gateways.models import Gateway, SenderId, SenderIdStatus
from smsplatform.config_schema import PlatformConfigData
from smsplatform.config_service import (
    FIELDS,
    LABEL,
    platform_config_data,
    platform_config_data_of,
    platform_config_instance,
)
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.errors import ApplicationError, ErrorCode, from_pydantic
from smsplatform.kernel.versioning import parse_version_token, stale_token_error, version_token
from smsplatform.models import PlatformConfig, PlatformConfigVersion

CHANGE_PERMISSION = "smsplatform.change_platformconfig"


def _validated_changes(changes: Any) -> dict[str, Any]:
    if not isinstance(changes, dict) or not changes:
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            "changes must be an object naming at least one setting.",
            field="changes",
            hint=f"Settings: {', '.join(FIELDS)}.",
        )
    unknown = sorted(set(changes) - set(FIELDS))
    if unknown:
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            f"Unknown setting {unknown[0]!r}.",
            field=f"changes.{unknown[0]}",
            hint=f"Settings: {', '.join(FIELDS)}.",
        )
    merged = {**platform_config_data(), **changes}
    try:
        validated = PlatformConfigData.model_validate(merged).model_dump(mode="json")
    except ValidationError as exc:
        raise from_pydantic(exc, prefix="changes.") from None
    _check_references(changes)
    # Only the named settings change; each is replaced whole by its validated form.
    return {name: validated[name] for name in changes}


def _check_references(changes: dict[str, Any]) -> None:
    """The defaults must name a gateway and a sender ID that exist: later writes rely on them."""
    gateway = changes.get("default_gateway")
    if gateway and not Gateway.objects.filter(code=gateway, enabled=True).exists():
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            f"No enabled gateway {gateway!r}.",
            field="changes.default_gateway",
            hint="Pick a code from sms_marketing.gateways.list.",
        )
    sender = changes.get("default_sender_id")
    if sender and not SenderId.objects.filter(value=sender, status=SenderIdStatus.REGISTERED).exists():
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            f"Sender ID {sender!r} is not registered.",
            field="changes.default_sender_id",
            hint="Pick a registered ID from sms_marketing.sender_ids.list.",
        )


def _check(actor: Actor, payload: dict[str, Any]) -> Checked:
    config = platform_config_instance()
    expected = parse_version_token(payload.get("base_version_token"), label=LABEL, pk=config.pk)
    if expected != config.version:
        raise stale_token_error(label=LABEL, pk=config.pk, current_version=config.version)
    _validated_changes(payload.get("changes"))
    return Checked(facts={"settings": sorted(payload["changes"]), "version": config.version})


def _execute(actor: Actor, payload: dict[str, Any], request: ActionRequest | None, context: Any) -> dict[str, Any]:
    config = platform_config_instance()
    expected = parse_version_token(payload["base_version_token"], label=LABEL, pk=config.pk)
    changes = _validated_changes(payload["changes"])
    before = {name: getattr(config, name) for name in changes}
    # Compare-and-set on the version: of two writers holding the same token,
    # exactly one updates a row; the other is told its token is stale.
    updated = PlatformConfig.objects.filter(pk=config.pk, version=expected).update(
        **changes,
        version=expected + 1,
        updated_at=timezone.now(),
        updated_by_id=actor.user_id,
    )
    if updated != 1:
        current = PlatformConfig.objects.values_list("version", flat=True).get(pk=config.pk)
        raise stale_token_error(label=LABEL, pk=config.pk, current_version=current)
    config.refresh_from_db()
    PlatformConfigVersion.objects.create(
        version=config.version,
        data=platform_config_data_of(config),
        created_by_id=actor.user_id,
        reason=payload.get("reason", ""),
    )
    audit_record(
        actor=actor,
        action="config.update",
        object_type="platform_config",
        object_id=config.pk,
        before=before,
        after=changes,
        reason=payload.get("reason", ""),
        action_request_id=request.pk if request else None,
    )
    return {
        "version": config.version,
        "base_version_token": version_token(LABEL, config.pk, config.version),
        "changed": sorted(changes),
    }


def _summary(payload: dict[str, Any], facts: dict[str, Any]) -> str:
    return f"Change configuration: {', '.join(sorted(payload.get('changes', {})))}"


register_action(
    GovernedAction(
        action=ActionType.CONFIG_UPDATE,
        permission=CHANGE_PERMISSION,
        check=_check,
        execute=_execute,
        summary=_summary,
    )
)


def platform_config_update(
    *,
    actor: Actor,
    changes: dict[str, Any],
    base_version_token: str,
    idempotency_key: str | None,
    reason: str = "",
) -> dict[str, Any]:
    """Change named settings. Needs the token from config.get; may be held for approval."""
    # Freeze the validated, normalised form: that is what an approver sees and approves.
    payload = {
        "changes": _validated_changes(changes),
        "base_version_token": base_version_token,
        "reason": reason,
    }
    return governed_write(
        actor=actor,
        action=ActionType.CONFIG_UPDATE,
        payload=payload,
        idempotency_key=idempotency_key,
        reason=reason,
    )
