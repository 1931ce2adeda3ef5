"""Idempotency keys as data (spine 4, STYLE 8).

Same key and same payload: the first result again, nothing done twice.
Same key, other payload: refused. The record is written in the same
transaction as the work, so a failed write leaves the key free to retry.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import QuerySet

from smsplatform.kernel.actor import Actor
from smsplatform.kernel.errors import ApplicationError, ErrorCode
from smsplatform.kernel.inserts import insert_unless_conflict
from smsplatform.models import IdempotencyRecord

KEY_PATTERN = re.compile(r"^[A-Za-z0-9._:\-]{8,200}$")


def request_fingerprint(operation: str, payload: Any) -> str:
    canonical = json.dumps(
        {"operation": operation, "payload": payload},
        sort_keys=True,
        cls=DjangoJSONEncoder,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def check_key(key: str | None) -> str:
    if not key:
        raise ApplicationError(
            ErrorCode.IDEMPOTENCY_KEY_REQUIRED,
            "Every write needs an idempotency_key.",
            field="idempotency_key",
            hint="Send a unique key per intended write (e.g. a UUID) and reuse it only to retry that same write.",
        )
    if not KEY_PATTERN.match(key):
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            "idempotency_key must be 8-200 characters of letters, digits, '.', '_', ':' or '-'.",
            field="idempotency_key",
            hint="Use a UUID.",
        )
    return key


def _namespace(actor: Actor) -> str:
    return "" if actor.user_id else f"system:{actor.token_name}"


def run_idempotent(
    *,
    actor: Actor,
    key: str | None,
    operation: str,
    payload: Any,
    execute: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    """Run ``execute`` once per (actor, key) in one durable transaction."""
    key = check_key(key)
    fingerprint = request_fingerprint(operation, payload)
    namespace = _namespace(actor)
    with transaction.atomic(durable=True):
        record = IdempotencyRecord(
            user_id=actor.user_id, namespace=namespace, key=key, operation=operation, request_hash=fingerprint
        )
        # One statement, no savepoint: a duplicate key inserts nothing and leaves the transaction
        # usable. On PostgreSQL a concurrent insert of the same key makes this wait until the
        # first transaction ends: the loser then finds its committed record and replays it.
        if not insert_unless_conflict(record):
            existing = IdempotencyRecord.objects.get(user=actor.user, namespace=namespace, key=key)
            if existing.request_hash != fingerprint:
                raise ApplicationError(
                    ErrorCode.IDEMPOTENCY_KEY_REUSED,
                    f"idempotency_key {key!r} was already used for a different request ({existing.operation}).",
                    field="idempotency_key",
                    hint="Use a new key for a new write; reuse a key only to retry the identical request.",
                ) from None
            if existing.response is None:  # pragma: no cover - committed together with the response
                raise ApplicationError(
                    ErrorCode.IDEMPOTENCY_IN_PROGRESS,
                    "The first request with this idempotency_key is still running.",
                    field="idempotency_key",
                    hint="Retry in a moment with the same key.",
                ) from None
            return dict(existing.response)
        result = execute()
        response = json.loads(json.dumps(result, cls=DjangoJSONEncoder))
        IdempotencyRecord.objects.filter(pk=record.pk).update(response=response)
        return dict(response)


def idempotent_replay(*, actor: Actor, key: object, operation: str, payload: Any) -> dict[str, Any] | None:
    """The first result when ``key`` was already used for this very request, else None.

    For services that check mutable state (a version token, a preview not yet used, a send time
    still ahead) before their governed write: a retry after the first call succeeded -- or after
    its request was approved and executed -- must get the first result, not a refusal from a
    state the first call itself changed. So they ask here first. Same key with another request:
    refused as ``run_idempotent`` would."""
    query = idempotent_replay_query(actor=actor, key=key)
    if query is None:
        return None
    found = list(query)  # sliced to one row: no first(), which would reorder it
    return idempotent_replay_of(found[0] if found else None, key=key, operation=operation, payload=payload)


def idempotent_replay_query(*, actor: Actor, key: object) -> QuerySet[IdempotencyRecord] | None:
    """``idempotent_replay``'s read (None for a key that cannot have been stored), for a caller that
    reads it beside others (smsplatform.kernel.roundtrips); its row goes to ``idempotent_replay_of``."""
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        return None
    return IdempotencyRecord.objects.filter(user=actor.user, namespace=_namespace(actor), key=key)[:1]


def idempotent_replay_of(
    existing: IdempotencyRecord | None, *, key: object, operation: str, payload: Any
) -> dict[str, Any] | None:
    """``idempotent_replay``'s answer once its record (or None) is read."""
    if existing is None or existing.response is None:
        return None
    if existing.request_hash != request_fingerprint(operation, payload):
        raise ApplicationError(
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            f"idempotency_key {key!r} was already used for a different request ({existing.operation}).",
            field="idempotency_key",
            hint="Use a new key for a new write; reuse a key only to retry the identical request.",
        )
    return dict(existing.response)


def committed_response(*, actor: Actor, key: object, since: datetime) -> dict[str, Any] | None:
    """The stored result of a write committed under ``key`` at or after ``since``, else None.

    The record commits with the work, so finding it means the write is durable even if what came
    after the commit (an on-commit step, the interface serialising the answer) failed."""
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        return None
    response = (
        IdempotencyRecord.objects.filter(
            user=actor.user, namespace=_namespace(actor), key=key, created_at__gte=since, response__isnull=False
        )
        .values_list("response", flat=True)
        .first()
    )
    return dict(response) if isinstance(response, dict) else None
