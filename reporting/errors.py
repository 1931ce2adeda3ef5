"""The reporting app's own error codes (STYLE 12); shared codes are the kernel's ``ErrorCode``."""

from __future__ import annotations

from enum import StrEnum


class ReportingErrorCode(StrEnum):
    # Snapshots and notifications
    SNAPSHOT_IMPOSSIBLE_VALUE = "snapshot_impossible_value"
    SNAPSHOT_EVIDENCE_REQUIRED = "snapshot_evidence_required"
    SNAPSHOT_EVIDENCE_HASH_MISMATCH = "snapshot_evidence_hash_mismatch"
    SNAPSHOT_EXISTS = "snapshot_exists"
    APPROVAL_POLICY_MISSING = "approval_policy_missing"
    NOTIFICATION_RECIPIENT_UNRELATED = "notification_recipient_unrelated"
    NOTIFICATION_RECIPIENT_UNKNOWN = "notification_recipient_unknown"
    NOTIFICATION_NO_RECIPIENTS = "notification_no_recipients"
    NOTIFICATION_PERSONAL_DATA = "notification_personal_data"
    NOTIFICATION_SUBJECT_MISMATCH = "notification_subject_mismatch"
