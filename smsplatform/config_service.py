"""The platform configuration singleton: reads, and the governed config.update action."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone
from pydantic import ValidationError

from compliance.governance import Checked, GovernedAction, governed_write, register_action
from compliance.models import ActionRequest, ActionType
from smsplatform.config_schema import SCALARS, SECTIONS, PlatformConfigData
from smsplatform.kernel.actor import Actor
from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.errors import ApplicationError, ErrorCode, from_pydantic
from smsplatform.kernel.versioning import (
    parse_version_token,
    stale_token_error,
    version_token,
)
from smsplatform.models import PlatformConfig, PlatformConfigVersion

LABEL = "smsplatform.platformconfig"
CHANGE_PERMISSION = "smsplatform.change_platformconfig"
FIELDS = (*SCALARS, *SECTIONS)


def _defaults() -> dict[str, Any]:
    return PlatformConfigData().model_dump(mode="json")


def platform_config_instance() -> PlatformConfig:
    """The singleton row, created with the Hong Kong defaults on first use."""
    config = PlatformConfig.objects.filter(singleton=1).first()
    if config is not None:
        return config
    data = _defaults()
    with transaction.atomic():
        config, created = PlatformConfig.objects.get_or_create(singleton=1, defaults=data)
        if created:
            PlatformConfigVersion.objects.get_or_create(version=config.version, defaults={"data": data})
    return config


def _data_of(config: PlatformConfig) -> dict[str, Any]:
    raw = {name: getattr(config, name) for name in FIELDS}
    # Stored sections are re-read through the schema so that a section added by a
    # later release appears with its default instead of missing.
    return PlatformConfigData.model_validate(raw).model_dump(mode="json")


def platform_config_data() -> dict[str, Any]:
    return _data_of(platform_config_instance())


def platform_config_get() -> dict[str, Any]:
    config = platform_config_instance()
    return {
        "config": _data_of(config),
        "version": config.version,
        "base_version_token": version_token(LABEL, config.pk, config.version),
        "updated_at": config.updated_at.isoformat(),
        "updated_by": config.updated_by.username if config.updated_by_id and config.updated_by else None,
        "note": (
            "Later writes follow this configuration: do not assume a sender ID, gateway, "
            "unsubscribe or cost rule that is not stated here."
        ),
    }


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
    from gateways.models import Gateway, SenderId, SenderIdStatus

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
        data=_data_of(config),
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


def platform_config_versions(*, limit: int = 20) -> list[dict[str, Any]]:
    return [
        {
            "version": v.version,
            "created_at": v.created_at.isoformat(),
            "created_by": v.created_by.username if v.created_by else None,
            "reason": v.reason,
        }
        for v in PlatformConfigVersion.objects.select_related("created_by")[:limit]
    ]
