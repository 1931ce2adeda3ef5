"""The automations app's own error codes (STYLE 12); shared codes are the kernel's ``ErrorCode``.

Every code the flows raise is listed here, and raise sites name these members, never a string
(tests/kernel/test_error_codes.py checks both). The events intake adds its codes to this enum.
"""

from __future__ import annotations

from enum import StrEnum


class AutomationErrorCode(StrEnum):
    # flows
    FLOW_STATE = "flow_state"
    FLOW_INVALID = "flow_invalid"
    FLOW_OPT_OUT_REQUIRED = "flow_opt_out_required"
    FLOW_FREQUENCY_REQUIRED = "flow_frequency_required"
    FLOW_TEMPLATE_INVALID = "flow_template_invalid"
    FLOW_COST_CHECK_FAILED = "flow_cost_check_failed"
    FLOW_GATEWAY_NOT_USABLE = "flow_gateway_not_usable"
