"""platform_config_update: validation, version tokens, idempotency, audit."""

from __future__ import annotations

from typing import Any

import pytest

from gateways.platform_config import platform_config_update
from smsplatform.config_service import platform_config_data, platform_config_get
from smsplatform.kernel.errors import ApplicationError, ErrorCode
from smsplatform.models import AuditLog, IdempotencyRecord, PlatformConfig, PlatformConfigVersion
from tests.support.actors import actor
from tests.support.db import postgres_only, race

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]


def update(user: Any, changes: dict[str, Any], token: str, key: str = "key-00000001", **kw: Any) -> dict[str, Any]:
    return platform_config_update(
        actor=actor(user), changes=changes, base_version_token=token, idempotency_key=key, **kw
    )


def test_defaults_are_hong_kong_first(technical: Any) -> None:
    data = platform_config_get()
    cfg = data["config"]
    assert cfg["schedule"]["time_zone"] == "Asia/Hong_Kong"
    assert "退訂" in cfg["unsubscribe"]["keywords"]["zh-hant"]
    assert "STOP" in cfg["unsubscribe"]["keywords"]["en"]
    assert cfg["unsubscribe"]["require_bilingual_footer"] is True
    assert cfg["schedule"]["quiet_hours"]["HK"] == {
        "start": "21:00",
        "end": "09:00",
        "time_zone": "Asia/Hong_Kong",
        "no_sundays": False,
    }
    assert data["version"] == 1 and data["base_version_token"].startswith("1.")


def test_update_executes_bumps_version_keeps_history_and_audits(technical: Any, config_token: str) -> None:
    result = update(technical, {"default_sender_id": "#SHOPHK"}, config_token, reason="SSRS registered")
    assert result["status"] == "executed"
    assert result["result"]["version"] == 2
    assert platform_config_data()["default_sender_id"] == "#SHOPHK"
    assert PlatformConfigVersion.objects.filter(version=2, reason="SSRS registered").exists()
    entry = AuditLog.objects.get(action="config.update")
    assert entry.user == technical and entry.before == {"default_sender_id": ""}
    assert entry.after == {"default_sender_id": "#SHOPHK"} and entry.reason == "SSRS registered"


def test_only_named_settings_change(technical: Any, config_token: str) -> None:
    before = platform_config_data()
    update(technical, {"quota": {**before["quota"], "monthly_quota_segments": 5}}, config_token)
    after = platform_config_data()
    assert after["quota"]["monthly_quota_segments"] == 5
    assert {k: v for k, v in after.items() if k != "quota"} == {k: v for k, v in before.items() if k != "quota"}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (
            {"schedule": {"quiet_hours": {"HK": {"start": "25:00", "end": "09:00"}}}},
            "changes.schedule.quiet_hours.HK.start",
        ),
        ({"schedule": {"time_zone": "Mars/Olympus"}}, "changes.schedule.time_zone"),
        ({"short_links": {"domain": "not a domain"}}, "changes.short_links.domain"),
        ({"default_sender_id": "THIS-IS-FAR-TOO-LONG"}, "changes.default_sender_id"),
        ({"quota": {"currency": "hkd"}}, "changes.quota.currency"),
        ({"unsubscribe": {"facility_valid_days": 7}}, "changes.unsubscribe.facility_valid_days"),
        ({"tracking": {"surprise": True}}, "changes.tracking.surprise"),
        ({"no_such_setting": 1}, "changes.no_such_setting"),
        ({}, "changes"),
    ],
)
def test_bad_input_names_the_field_and_writes_nothing(
    technical: Any, config_token: str, changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(ApplicationError) as err:
        update(technical, changes, config_token)
    assert err.value.code == ErrorCode.VALIDATION_ERROR
    assert err.value.field == field
    assert err.value.hint
    assert PlatformConfig.objects.get().version == 1
    assert not AuditLog.objects.exists() and not IdempotencyRecord.objects.exists()


def test_stop_keyword_cannot_be_removed(technical: Any, config_token: str) -> None:
    unsub = platform_config_data()["unsubscribe"]
    update(technical, {"unsubscribe": {**unsub, "keywords": {"en": ["QUIT"], "zh-hant": ["退訂"]}}}, config_token)
    assert "STOP" in platform_config_data()["unsubscribe"]["keywords"]["en"]


def test_stale_token_is_refused_with_the_current_one(technical: Any, config_token: str) -> None:
    update(technical, {"default_gateway": "simulator"}, config_token, key="key-first-0001")
    with pytest.raises(ApplicationError) as err:
        update(technical, {"default_gateway": "other"}, config_token, key="key-second-001")
    assert err.value.code == ErrorCode.STALE_VERSION_TOKEN
    assert err.value.details["current_version_token"] == platform_config_get()["base_version_token"]
    assert platform_config_data()["default_gateway"] == "simulator"


def test_forged_or_missing_token_refused(technical: Any) -> None:
    for token, code in [
        ("", ErrorCode.VERSION_TOKEN_REQUIRED),
        ("1.deadbeefdeadbeef", ErrorCode.VALIDATION_ERROR),
        ("nonsense", ErrorCode.VALIDATION_ERROR),
    ]:
        with pytest.raises(ApplicationError) as err:
            update(technical, {"default_gateway": "x"}, token)
        assert err.value.code == code and err.value.field == "base_version_token"


def test_marketing_cannot_change_config(marketing: Any, config_token: str) -> None:
    with pytest.raises(ApplicationError) as err:
        update(marketing, {"default_gateway": "x"}, config_token)
    assert err.value.code == ErrorCode.PERMISSION_DENIED


# --- idempotency -------------------------------------------------------------


def test_same_key_same_payload_returns_first_result_once(technical: Any, config_token: str) -> None:
    first = update(technical, {"default_gateway": "simulator"}, config_token, key="retry-key-0001")
    again = update(technical, {"default_gateway": "simulator"}, config_token, key="retry-key-0001")
    assert again == first
    assert PlatformConfig.objects.get().version == 2
    assert AuditLog.objects.filter(action="config.update").count() == 1


def test_same_key_other_payload_is_refused(technical: Any, config_token: str) -> None:
    update(technical, {"default_gateway": "simulator"}, config_token, key="retry-key-0002")
    with pytest.raises(ApplicationError) as err:
        update(technical, {"default_gateway": "other"}, config_token, key="retry-key-0002")
    assert err.value.code == ErrorCode.IDEMPOTENCY_KEY_REUSED and err.value.field == "idempotency_key"
    assert platform_config_data()["default_gateway"] == "simulator"


def test_missing_or_malformed_key_refused(technical: Any, config_token: str) -> None:
    for key, code in [
        (None, ErrorCode.IDEMPOTENCY_KEY_REQUIRED),
        ("short", ErrorCode.VALIDATION_ERROR),
        ("has spaces in it", ErrorCode.VALIDATION_ERROR),
    ]:
        with pytest.raises(ApplicationError) as err:
            platform_config_update(
                actor=actor(technical),
                changes={"default_gateway": "x"},
                base_version_token=config_token,
                idempotency_key=key,
            )
        assert err.value.code == code and err.value.field == "idempotency_key"


def test_failed_write_leaves_the_key_free(technical: Any, config_token: str) -> None:
    with pytest.raises(ApplicationError):
        update(technical, {"default_gateway": "x"}, "1.0000000000000000", key="retry-key-0003")
    result = update(technical, {"default_gateway": "x"}, config_token, key="retry-key-0003")
    assert result["status"] == "executed"


def test_keys_are_per_user(technical: Any, make_user: Any, config_token: str) -> None:
    other = make_user("technical")
    update(technical, {"default_gateway": "a"}, config_token, key="shared-key-001")
    token = platform_config_get()["base_version_token"]
    result = update(other, {"default_gateway": "b"}, token, key="shared-key-001")
    assert result["result"]["version"] == 3


# --- real races (PostgreSQL) ---------------------------------------------------


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_race_two_writers_one_version_token(technical: Any, config_token: str) -> None:
    results = race(2, lambda i: update(technical, {"default_gateway": f"gw{i}"}, config_token, key=f"race-key-{i:04d}"))
    winners = [r for r in results if isinstance(r, dict)]
    losers = [r for r in results if isinstance(r, ApplicationError)]
    assert len(winners) == 1 and len(losers) == 1, results
    assert losers[0].code == ErrorCode.STALE_VERSION_TOKEN
    assert PlatformConfig.objects.get().version == 2
    assert AuditLog.objects.filter(action="config.update").count() == 1


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_race_same_idempotency_key_executes_once(technical: Any, config_token: str) -> None:
    results = race(3, lambda i: update(technical, {"default_gateway": "gw"}, config_token, key="race-same-key"))
    assert all(isinstance(r, dict) for r in results), results
    assert results[0] == results[1] == results[2]
    assert PlatformConfig.objects.get().version == 2
    assert AuditLog.objects.filter(action="config.update").count() == 1
