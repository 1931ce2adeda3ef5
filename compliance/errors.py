"""The compliance app's own error codes (STYLE 12).

None yet: governance, approvals and opt-outs answer with the kernel's shared codes
(``smsplatform.kernel.errors.ErrorCode``: permission_denied, approval_*, not_found, ...).
A code compliance adds goes here, so the generated tool reference lists it.
"""

from __future__ import annotations

from enum import StrEnum


class ComplianceErrorCode(StrEnum):
    pass
