"""The platform configuration singleton: the read side.

The governed write (``platform_config_update``, the config.update action) checks that the
defaults name a gateway and a sender ID that exist, so it lives in gateways/platform_config.py,
the lowest app that may see those models: the kernel imports no app."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from smsplatform.config_schema import SCALARS, SECTIONS, PlatformConfigData
from smsplatform.kernel.versioning import version_token
from smsplatform.models import PlatformConfig, PlatformConfigVersion

LABEL = "smsplatform.platformconfig"
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


def platform_config_data_of(config: PlatformConfig) -> dict[str, Any]:
    raw = {name: getattr(config, name) for name in FIELDS}
    # Stored sections are re-read through the schema so that a section added by a
    # later release appears with its default instead of missing.
    return PlatformConfigData.model_validate(raw).model_dump(mode="json")


def platform_config_data() -> dict[str, Any]:
    return platform_config_data_of(platform_config_instance())


def platform_config_get() -> dict[str, Any]:
    config = platform_config_instance()
    return {
        "config": platform_config_data_of(config),
        "version": config.version,
        "base_version_token": version_token(LABEL, config.pk, config.version),
        "updated_at": config.updated_at.isoformat(),
        "updated_by": config.updated_by.username if config.updated_by_id and config.updated_by else None,
        "note": (
            "Later writes follow this configuration: do not assume a sender ID, gateway, "
            "unsubscribe or cost rule that is not stated here."
        ),
    }


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
