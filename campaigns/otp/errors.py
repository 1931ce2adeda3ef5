"""The OTP app's own error codes (STYLE 12); shared codes are the kernel's ``ErrorCode``.

Every code campaigns.otp raises is listed here, and raise sites name these members, never a
string (tests/kernel/test_error_codes.py checks both).
"""

from __future__ import annotations

from enum import StrEnum


class OtpErrorCode(StrEnum):
    # Abuse defence (campaigns/otp/abuse.py)
    RATE_LIMITED = "rate_limited"  # a velocity limit (phone, client_ip, token, country) is used up
    OTP_RANGE_BLOCKED = "otp_range_blocked"  # the number's range or prefix is blocked (SMS pumping)
    OTP_PREFIX_DENIED = "otp_prefix_denied"  # the number's prefix is on the configured deny list
    PUMPING_BLOCK_LIFTED = "pumping_block_lifted"  # lifting a block that is already lifted
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
