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
