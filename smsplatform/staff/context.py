"""The navigation for the staff pages' base layout (only on /app/: other pages do not use it)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from smsplatform.staff.registry import staff_navigation


def staff_nav(request: HttpRequest) -> dict[str, Any]:
    if not request.path.startswith("/app/") or not request.user.is_authenticated:
        return {}
    return {"staff_nav": staff_navigation(request.user)}
