"""The gateways app's own error codes (STYLE 12); shared codes are the kernel's ``ErrorCode``."""

from __future__ import annotations

from enum import StrEnum


class GatewayErrorCode(StrEnum):
    # sender IDs and their applications
    SENDER_ID_INVALID_FORMAT = "sender_id_invalid_format"
    SENDER_ID_UNKNOWN = "sender_id_unknown"
    SENDER_ID_NOT_USABLE = "sender_id_not_usable"
    SENDER_ID_REGION_MISMATCH = "sender_id_region_mismatch"
    SENDER_ID_IMPERSONATION = "sender_id_impersonation"
    SENDER_ID_ALREADY_REGISTERED = "sender_id_already_registered"
    COMPANY_REGISTRATION_INVALID = "company_registration_invalid"
    DOCUMENTS_MISSING = "documents_missing"
    # quota and balance
    QUOTA_EXCEEDED = "quota_exceeded"
    BALANCE_INSUFFICIENT = "balance_insufficient"
    # the outbound queue
    BODY_EMPTY = "body_empty"
    COUNTRY_NOT_COVERED = "country_not_covered"
    ENCODING_NOT_SUPPORTED = "encoding_not_supported"
    DESTINATION_OPTED_OUT = "destination_opted_out"
    BODY_PROMOTIONAL = "body_promotional"
