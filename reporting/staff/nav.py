"""The reporting sections of the staff app's navigation (registered from ReportingConfig.ready)."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from reporting.selectors import VIEW_REPORT
from smsplatform.staff.registry import StaffPage, StaffSection, staff_section_register


def register() -> None:
    staff_section_register(
        StaffSection(
            prefix="reports",
            urlconf="reporting.staff.urls",
            namespace="reports",
            pages=(StaffPage(_("Reports"), "list", VIEW_REPORT, order=60),),
        )
    )
    # Everyone logged in has an inbox: only their own items.
    staff_section_register(
        StaffSection(
            prefix="inbox",
            urlconf="reporting.staff.inbox_urls",
            namespace="inbox",
            pages=(StaffPage(_("Inbox"), "list", "", order=70),),
        )
    )
