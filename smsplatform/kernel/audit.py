"""Writing the append-only audit log (spine 7). Always inside the caller's transaction."""

from __future__ import annotations

import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from smsplatform.kernel.actor import Actor
from smsplatform.models import AuditLog


def _jsonable(value: Any) -> Any:
    if value is None:
        return None
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


def audit_record(
    *,
    actor: Actor,
    action: str,
    object_type: str = "",
    object_id: object = "",
    before: Any = None,
    after: Any = None,
    reason: str = "",
    action_request_id: int | None = None,
    idempotency_key: str = "",
) -> AuditLog:
    return AuditLog.objects.create(
        user_id=actor.user_id,
        channel=str(actor.channel),
        token_name=actor.token_name,
        action=action,
        object_type=object_type,
        object_id=str(object_id) if object_id not in (None, "") else "",
        before=_jsonable(before),
        after=_jsonable(after),
        reason=reason,
        action_request_id=action_request_id,
        idempotency_key=idempotency_key,
    )
