"""The audit log is append-only at every layer; previews are single-use and expire."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from smsplatform.kernel.audit import audit_record
from smsplatform.kernel.errors import ApplicationError, ErrorCode
from smsplatform.kernel.previews import preview_consume, preview_store, previews_purge_expired
from smsplatform.models import AuditLog, Preview
from tests.support.actors import actor

pytestmark = pytest.mark.django_db


@pytest.fixture
def entry(technical: Any) -> AuditLog:
    return audit_record(actor=actor(technical), action="test.write", object_type="thing", object_id=1, after={"a": 1})


def test_audit_row_cannot_be_updated_or_deleted_through_the_orm(entry: AuditLog) -> None:
    entry.reason = "rewritten"
    for attempt in (
        entry.save,
        entry.delete,
        lambda: AuditLog.objects.update(reason="x"),
        AuditLog.objects.all().delete,
    ):
        with pytest.raises(ApplicationError) as err:
            attempt()
        assert err.value.code == ErrorCode.AUDIT_IMMUTABLE
    assert AuditLog.objects.get().reason == ""


def test_audit_row_cannot_be_changed_by_raw_sql(entry: AuditLog) -> None:
    table = AuditLog._meta.db_table
    for sql in (f"UPDATE {table} SET reason = 'x'", f"DELETE FROM {table}"):  # noqa: S608
        with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql)
    assert AuditLog.objects.get().reason == ""


def test_audit_records_actor_channel_and_token(technical: Any) -> None:
    row = audit_record(actor=actor(technical, token_name="agent-1"), action="x.y")
    assert (row.user, row.channel, row.token_name) == (technical, "api", "agent-1")


def test_preview_is_single_use(technical: Any) -> None:
    a = actor(technical)
    preview = preview_store(actor=a, kind="segments", payload={"criteria": 1}, result={"count": 5})
    with transaction.atomic():
        used = preview_consume(
            actor=a, kind="segments", preview_id=preview.pk, field="segment_preview_id", consumer="x"
        )
    assert used.payload == {"criteria": 1}
    with pytest.raises(ApplicationError) as err:
        preview_consume(actor=a, kind="segments", preview_id=preview.pk, field="segment_preview_id", consumer="x")
    assert err.value.code == ErrorCode.PREVIEW_ALREADY_USED and err.value.field == "segment_preview_id"


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (
            lambda p, other: Preview.objects.filter(pk=p.pk).update(expires_at=timezone.now() - timedelta(seconds=1)),
            ErrorCode.PREVIEW_EXPIRED,
        ),
        (lambda p, other: Preview.objects.filter(pk=p.pk).update(user=other), ErrorCode.PREVIEW_NOT_FOUND),
        (lambda p, other: Preview.objects.filter(pk=p.pk).update(kind="short_links"), ErrorCode.PREVIEW_KIND_MISMATCH),
    ],
)
def test_preview_refusals(technical: Any, make_user: Any, mutate: Any, code: str) -> None:
    a = actor(technical)
    preview = preview_store(actor=a, kind="segments", payload={}, result={})
    mutate(preview, make_user())
    with pytest.raises(ApplicationError) as err:
        preview_consume(actor=a, kind="segments", preview_id=preview.pk, field="segment_preview_id", consumer="x")
    assert err.value.code == code


def test_preview_id_must_be_a_uuid(technical: Any) -> None:
    with pytest.raises(ApplicationError) as err:
        preview_consume(
            actor=actor(technical), kind="segments", preview_id="abc", field="segment_preview_id", consumer="x"
        )
    assert err.value.code == ErrorCode.VALIDATION_ERROR and err.value.field == "segment_preview_id"


def test_purge_removes_only_long_expired(technical: Any) -> None:
    a = actor(technical)
    old = preview_store(actor=a, kind="segments", payload={}, result={}, ttl_seconds=1)
    fresh = preview_store(actor=a, kind="segments", payload={}, result={})
    Preview.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(days=8))
    assert previews_purge_expired() == 1
    assert list(Preview.objects.values_list("pk", flat=True)) == [fresh.pk]
