"""The automations app's own error codes (STYLE 12); shared codes are the kernel's ``ErrorCode``.

Batch-level codes refuse a whole request to the events endpoint; per-event codes are the
``reason`` of a refused item in a batch's answer (nothing else of the batch is refused for them).
"""

from __future__ import annotations

from enum import StrEnum


class AutomationErrorCode(StrEnum):
    # the events endpoint: the whole request
    EVENT_SOURCE_UNKNOWN = "event_source_unknown"
    SIGNATURE_MISSING = "signature_missing"
    SIGNATURE_INVALID = "signature_invalid"
    SIGNATURE_EXPIRED = "signature_expired"
    EVENT_BATCH_TOO_LARGE = "event_batch_too_large"
    # one event of a batch (the item's reason)
    EVENT_INVALID = "event_invalid"
    EVENT_TYPE_UNKNOWN = "event_type_unknown"
    EVENT_FIELD_REQUIRED = "event_field_required"
    EVENT_FIELD_INVALID = "event_field_invalid"
    EVENT_IN_FUTURE = "event_in_future"
    EVENT_TOO_OLD = "event_too_old"
    EVENT_ID_REPEATED = "event_id_repeated"
    AMOUNT_INVALID = "amount_invalid"
    CURRENCY_INVALID = "currency_invalid"
    CONTACT_UNKNOWN = "contact_unknown"
    CONTACT_MISMATCH = "contact_mismatch"
    # flows
    FLOW_STATE = "flow_state"
    FLOW_INVALID = "flow_invalid"
    FLOW_OPT_OUT_REQUIRED = "flow_opt_out_required"
    FLOW_FREQUENCY_REQUIRED = "flow_frequency_required"
    FLOW_TEMPLATE_INVALID = "flow_template_invalid"
    FLOW_COST_CHECK_FAILED = "flow_cost_check_failed"
    FLOW_GATEWAY_NOT_USABLE = "flow_gateway_not_usable"
