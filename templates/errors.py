"""The templates app's own error codes (STYLE 12) and the coded error its rules raise.

Shared codes are the kernel's ``ErrorCode``."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from smsplatform.kernel.errors import ApplicationError


class TemplateErrorCode(StrEnum):
    TEXT_EMPTY = "text_empty"
    TEXT_TOO_LONG = "text_too_long"
    MISSING_REQUIRED_WORDING = "template_missing_required_wording"
    OTP_PROMOTIONAL = "template_otp_promotional"
    PLACEHOLDER_UNDECLARED = "template_placeholder_undeclared"
    FIELD_UNUSED = "template_field_unused"
    NAME_TAKEN = "template_name_taken"
    URL_INVALID = "url_invalid"
    URL_SCHEME = "url_scheme_not_allowed"
    URL_CREDENTIALS = "url_credentials"
    URL_IP_LITERAL = "url_ip_literal"
    URL_LOOKALIKE = "url_lookalike_domain"
    URL_SHORTENER = "url_shortener"
    URL_DENIED = "url_domain_denied"
    URL_NOT_ALLOWED = "url_domain_not_allowed"
    UTM_MISSING = "utm_missing"
    UTM_MALFORMED = "utm_malformed"
    EXPIRY_INVALID = "expiry_invalid"
    TRACKING_NOT_PERMITTED = "tracking_not_permitted"
    PREVIEW_OUTDATED = "short_link_preview_outdated"


def template_error(code: str, message: str, *, field: str, hint: str, **details: Any) -> ApplicationError:
    return ApplicationError(code, message, field=field, hint=hint, details=details or None)
