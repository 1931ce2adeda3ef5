"""The OTP app's own error codes (STYLE 12); shared codes are the kernel's ``ErrorCode``."""

from __future__ import annotations

from enum import StrEnum


class OtpErrorCode(StrEnum):
    # template content
    OTP_PROMOTIONAL = "otp_template_promotional"
    CODE_PLACEHOLDER_MISSING = "otp_code_placeholder_missing"
    PLACEHOLDER_UNKNOWN = "otp_placeholder_unknown"
    NOT_SINGLE_SEGMENT = "otp_not_single_segment"
    TEMPLATE_NAME_TAKEN = "otp_template_name_taken"
    # sending and checking
    TEMPLATE_NOT_APPROVED = "otp_template_not_approved"
    COUNTRY_NOT_ALLOWED = "otp_country_not_allowed"
    MAX_SENDS_REACHED = "otp_max_sends_reached"
    VERIFICATION_NOT_PENDING = "otp_verification_not_pending"
    VERIFICATION_EXPIRED = "otp_verification_expired"
