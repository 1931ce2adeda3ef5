"""What every campaign write receives from an interface, split once for MCP tools and REST views.

Each write tool or view takes the same envelope around its own fields: the caller (actor), an
``idempotency_key``, a ``reason``, for versioned writes the ``base_version_token`` and, for
schedule and send, ``confirm``. ``write_args`` takes the envelope off; the interface then calls
one service with it and maps the governed result (executed or pending approval) its own way.
A missing key reaches the service, which answers with its own code (idempotency_key_required);
service errors (ApplicationError) are mapped by each interface's common error handling.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smsplatform.kernel.actor import Actor


@dataclass(frozen=True)
class WriteArgs:
    actor: Actor
    fields: dict[str, Any]
    """The input without the envelope: what the service itself takes."""
    idempotency_key: str | None
    reason: str
    base_version_token: str | None
    confirm: bool


def write_args(actor: Actor, data: Mapping[str, Any]) -> WriteArgs:
    fields = dict(data)
    key = fields.pop("idempotency_key", None)
    return WriteArgs(
        actor=actor,
        fields=fields,
        idempotency_key=str(key) if key else None,
        reason=str(fields.pop("reason", "") or ""),
        base_version_token=fields.pop("base_version_token", None) or None,
        confirm=bool(fields.pop("confirm", False)),
    )
