"""The templates section of the staff app's navigation (registered from TemplatesConfig.ready)."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from smsplatform.staff.registry import StaffPage, StaffSection, staff_section_register


def register() -> None:
    staff_section_register(
        StaffSection(
            prefix="templates",
            urlconf="templates.staff.urls",
            namespace="templates",
            pages=(StaffPage(_("Templates"), "list", "sms_templates.view_template", order=30),),
        )
    )
