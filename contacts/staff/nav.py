"""The contacts section of the staff app's navigation (registered from ContactsConfig.ready)."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from smsplatform.staff.registry import StaffPage, StaffSection, staff_section_register


def register() -> None:
    staff_section_register(
        StaffSection(
            prefix="contacts",
            urlconf="contacts.staff.urls",
            namespace="contacts",
            pages=(
                StaffPage(_("Contacts"), "search", "contacts.view_contact", order=20),
                StaffPage(_("Import contacts"), "import", "contacts.add_contact", order=22),
            ),
        )
    )
