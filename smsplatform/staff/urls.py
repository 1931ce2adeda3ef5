"""/app/: the shell's own pages, then every registered app section (see registry)."""

from __future__ import annotations

from typing import Any

from django.urls import include, path
from django.views.i18n import set_language

from smsplatform.staff import views
from smsplatform.staff.registry import staff_sections

app_name = "staff"


def _patterns() -> list[Any]:
    patterns: list[Any] = [
        path("", views.home, name="home"),
        path("login/", views.StaffLoginView.as_view(), name="login"),
        path("logout/", views.StaffLogoutView.as_view(), name="logout"),
        path("language/", set_language, name="set-language"),
    ]
    for section in staff_sections():
        patterns.append(path(f"{section.prefix}/", include((section.urlconf, section.namespace))))
    return patterns


urlpatterns = _patterns()
