"""The contacts app's own error codes (STYLE 12).

None yet: contacts, consent, segments and imports answer with the kernel's shared codes
(``smsplatform.kernel.errors.ErrorCode``: validation_error, stale_version_token, preview_*, ...).
A code contacts adds goes here, so the generated tool reference lists it.
"""

from __future__ import annotations

from enum import StrEnum


class ContactErrorCode(StrEnum):
    pass
