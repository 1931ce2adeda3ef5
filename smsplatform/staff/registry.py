"""The staff app's navigation registry: each app registers its section (a URL module mounted
under /app/<prefix>/ and the pages it shows in the navigation) from its AppConfig.ready(), so the
shell in smsplatform never imports an app above it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.urls import NoReverseMatch, reverse


@dataclass(frozen=True)
class StaffPage:
    """A navigation entry: its label (lazily translated), URL name and the permission it needs."""

    label: Any
    url_name: str
    permission: str = ""
    order: int = 100


@dataclass(frozen=True)
class StaffSection:
    """An app's pages: mounted at /app/<prefix>/ from ``urlconf`` (a module path), in namespace ``namespace``."""

    prefix: str
    urlconf: str
    namespace: str
    pages: tuple[StaffPage, ...] = field(default_factory=tuple)


_sections: dict[str, StaffSection] = {}


def staff_section_register(section: StaffSection) -> None:
    """Called once per app from its ready(); registering the same namespace again replaces it."""
    if any(s.prefix == section.prefix and s.namespace != section.namespace for s in _sections.values()):
        raise ValueError(f"Staff prefix {section.prefix!r} is taken.")
    _sections[section.namespace] = section


def staff_sections() -> list[StaffSection]:
    return sorted(_sections.values(), key=lambda s: s.prefix)


def staff_navigation(user: Any) -> list[dict[str, Any]]:
    """The pages this user may open, in order: label and URL."""
    entries = []
    for section in staff_sections():
        for page in section.pages:
            if page.permission and not user.has_perm(page.permission):
                continue
            try:
                url = reverse(f"staff:{section.namespace}:{page.url_name}")
            except NoReverseMatch:
                continue
            entries.append({"label": page.label, "url": url, "order": page.order, "section": section.namespace})
    return sorted(entries, key=lambda e: (e["order"], str(e["label"])))
