"""The OTP section of the staff app's navigation (registered from OtpConfig.ready)."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from campaigns.otp.selectors import VIEW_TEMPLATES, VIEW_VERIFICATIONS
from smsplatform.staff.registry import StaffPage, StaffSection, staff_section_register


def register() -> None:
    staff_section_register(
        StaffSection(
            prefix="otp",
            urlconf="campaigns.otp.staff.urls",
            namespace="otp",
            pages=(
                StaffPage(_("OTP templates"), "list", VIEW_TEMPLATES, order=50),
                StaffPage(_("Verifications"), "verifications", VIEW_VERIFICATIONS, order=51),
            ),
        )
    )
