"""One error type with codes, shared by every interface (STYLE 12).

REST, MCP, admin messages and forms all render an ``ApplicationError`` as
``{"code", "message", "field", "hint"}``: the field at fault and the tool or
step that fixes it. Raw exception text never reaches a client.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """The codes every app shares. Each app lists its own beside its services (``<app>/errors.py``);
    docs/MCP_TOOLS.md lists them all, and tests/kernel/test_error_codes.py keeps the lists complete."""

    # generic input problems
    VALIDATION_ERROR = "validation_error"
    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    # input the kernel parses for every app (phones.py, segments.py)
    PHONE_INVALID = "phone_invalid"
    LONE_SURROGATE = "lone_surrogate"
    CONTROL_CHARACTER = "control_character"
    # access
    AUTHENTICATION_REQUIRED = "authentication_required"
    PERMISSION_DENIED = "permission_denied"
    # governance spine
    IDEMPOTENCY_KEY_REQUIRED = "idempotency_key_required"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    IDEMPOTENCY_IN_PROGRESS = "idempotency_in_progress"
    VERSION_TOKEN_REQUIRED = "version_token_required"
    STALE_VERSION_TOKEN = "stale_version_token"
    PREVIEW_NOT_FOUND = "preview_not_found"
    PREVIEW_EXPIRED = "preview_expired"
    PREVIEW_ALREADY_USED = "preview_already_used"
    PREVIEW_KIND_MISMATCH = "preview_kind_mismatch"
    APPROVAL_SELF_APPROVAL = "approval_self_approval"
    APPROVAL_NOT_PENDING = "approval_not_pending"
    APPROVAL_EXPIRED = "approval_expired"
    APPROVAL_ROLE_REQUIRED = "approval_role_required"
    APPROVAL_REASON_REQUIRED = "approval_reason_required"
    AUDIT_IMMUTABLE = "audit_immutable"
    # interfaces
    UNKNOWN_TOOL = "unknown_tool"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    MALFORMED_REQUEST = "malformed_request"
    REQUEST_TOO_LARGE = "request_too_large"
    INTERNAL_ERROR = "internal_error"
    WRITE_COMMITTED = "write_committed"  # a failure after the write committed: it is not lost


# HTTP status per code, for REST; anything not listed is a 400.
HTTP_STATUS: dict[str, int] = {
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.PREVIEW_NOT_FOUND: 404,
    ErrorCode.AUTHENTICATION_REQUIRED: 401,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.APPROVAL_SELF_APPROVAL: 403,
    ErrorCode.APPROVAL_ROLE_REQUIRED: 403,
    ErrorCode.IDEMPOTENCY_KEY_REUSED: 409,
    ErrorCode.IDEMPOTENCY_IN_PROGRESS: 409,
    ErrorCode.STALE_VERSION_TOKEN: 409,
    ErrorCode.APPROVAL_NOT_PENDING: 409,
    ErrorCode.APPROVAL_EXPIRED: 409,
    ErrorCode.PREVIEW_EXPIRED: 410,
    ErrorCode.PREVIEW_ALREADY_USED: 409,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.REQUEST_TOO_LARGE: 413,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.WRITE_COMMITTED: 500,
}


def http_status_register(code: str, status: int) -> None:
    """The HTTP status of an app's own code (apps call this from ``ready()``: the kernel names
    none of their codes), e.g. 429 for the OTP abuse defence's ``rate_limited``."""
    HTTP_STATUS[code] = status


class ApplicationError(Exception):
    """A domain error with a stable code, the field at fault and a hint."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        field: str | None = None,
        hint: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = str(code)
        self.message = message
        self.field = field
        self.hint = hint
        self.details = details or {}

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 400)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "field": self.field,
            "hint": self.hint,
        }
        if self.details:
            data["details"] = self.details
        return data

    def __repr__(self) -> str:
        return f"ApplicationError({self.code!r}, {self.message!r}, field={self.field!r})"


def not_found(what: str, identifier: object, *, field: str, hint: str) -> ApplicationError:
    return ApplicationError(
        ErrorCode.NOT_FOUND,
        f"No {what} with id {identifier!r} is visible to you.",
        field=field,
        hint=hint,
    )


# Which platform roles grant a permission: set by the compliance app (which owns the roles) when
# it is ready; the kernel sits below it and cannot import it.
permission_roles: Callable[[str], list[str]] | None = None


def permission_hint(permission: str) -> str:
    """Where to turn for a permission: the roles that grant it, and the tool that lists who holds
    them (owners.list filtered by role shows exactly those accounts)."""
    roles = permission_roles(permission) if permission_roles is not None else []
    if not roles:
        return "No platform role grants it: ask an administrator (a superuser may act)."
    return (
        f"Roles that grant it: {', '.join(roles)}. Ask a holder, or an administrator to give you one of "
        f'these roles; sms_marketing.owners.list {{"role": "{roles[0]}"}} lists who holds it.'
    )


def permission_denied(permission: str, *, hint: str | None = None) -> ApplicationError:
    return ApplicationError(
        ErrorCode.PERMISSION_DENIED,
        f"Your account lacks the permission {permission!r} needed for this action.",
        hint=hint or permission_hint(permission),
    )


def from_pydantic(exc: Any, *, prefix: str = "") -> ApplicationError:
    """Turn a pydantic ValidationError into our shape, naming the first field at fault, in our
    own words (smsplatform.kernel.validation_text), never pydantic's text."""
    from smsplatform.kernel.validation_text import pydantic_error_text

    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "type": ""}
    loc = ".".join(str(part) for part in first.get("loc", ()))
    field = f"{prefix}{loc}" if loc else (prefix.rstrip(".") or None)
    problems = [
        {
            "field": f"{prefix}{'.'.join(str(p) for p in e.get('loc', ()))}",
            "message": pydantic_error_text(e),
        }
        for e in errors
    ]
    return ApplicationError(
        ErrorCode.VALIDATION_ERROR,
        f"{field or 'input'} {pydantic_error_text(first)}",
        field=field,
        hint="Correct the field named and send the request again.",
        details={"problems": problems},
    )
