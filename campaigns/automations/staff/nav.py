"""The automations section of the staff app's navigation (registered from AutomationsConfig.ready)."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from campaigns.automations.flow_services import VIEW
from smsplatform.staff.registry import StaffPage, StaffSection, staff_section_register


def register() -> None:
    staff_section_register(
        StaffSection(
            prefix="automations",
            urlconf="campaigns.automations.staff.urls",
            namespace="automations",
            pages=(StaffPage(_("Automations"), "list", VIEW, order=40),),
        )
    )
