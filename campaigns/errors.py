"""The campaigns app's own error codes (STYLE 12); shared codes are the kernel's ``ErrorCode``.

Every code campaigns raises is listed here, and raise sites name these members, never a string
(tests/kernel/test_error_codes.py checks both).
"""

from __future__ import annotations

from enum import StrEnum


class CampaignErrorCode(StrEnum):
    # state
    CAMPAIGN_STATE = "campaign_state"
    CAMPAIGN_NOT_EDITABLE = "campaign_not_editable"
    CAMPAIGN_NOT_APPROVED = "campaign_not_approved"
    CAMPAIGN_NOT_CANCELLABLE = "campaign_not_cancellable"
    CAMPAIGN_CONTENT_CHANGED = "campaign_content_changed"
    # content
    TEMPLATE_PURPOSE_MISMATCH = "template_purpose_mismatch"
    FIELD_TOO_LONG = "field_too_long"
    MESSAGE_TOO_LONG = "message_too_long"
    ENCODING_NOT_SUPPORTED = "encoding_not_supported"
    SHORT_LINK_REQUIRED = "short_link_required"
    SHORT_LINK_EXPIRED = "short_link_expired"
    SHORT_LINK_IN_USE = "short_link_in_use"
    LANDING_PAGE_INCONSISTENT = "landing_page_inconsistent"
    # audience, gateway and cost
    SEGMENT_NOT_CONSENTED = "segment_not_consented"
    GATEWAY_NOT_USABLE = "gateway_not_usable"
    COST_UNKNOWN = "cost_unknown"
    OVER_BUDGET = "over_budget"
    OVER_COST_CEILING = "over_cost_ceiling"
    QUOTA_EXCEEDED = "quota_exceeded"
    # schedule and dispatch
    SEND_TIME_PASSED = "send_time_passed"
    SEND_TIME_TOO_SOON = "send_time_too_soon"
    NO_SENDABLE_RECIPIENTS = "no_sendable_recipients"
    FREQUENCY_CAP_BLOCKS = "frequency_cap_blocks"
    # retries
    NOTHING_TO_RESEND = "nothing_to_resend"
    TOO_MANY_FAILURES = "too_many_failures"
