"""The campaigns section of the staff app's navigation (registered from CampaignsConfig.ready)."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from campaigns.access import VIEW
from campaigns.services import ADD
from smsplatform.staff.registry import StaffPage, StaffSection, staff_section_register


def register() -> None:
    staff_section_register(
        StaffSection(
            prefix="campaigns",
            urlconf="campaigns.staff.urls",
            namespace="campaigns",
            pages=(
                StaffPage(_("Campaigns"), "list", VIEW, order=10),
                StaffPage(_("New campaign"), "compose", ADD, order=11),
            ),
        )
    )
