"""What every staff view shares: login and permission checks, the ``form`` actor, and service
errors turned into per-field messages."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext as _

from smsplatform.kernel.actor import Actor, Channel
from smsplatform.kernel.errors import ApplicationError

LOGIN_URL = "/app/login/"
View = Callable[..., HttpResponse]


def staff_actor(request: HttpRequest) -> Actor:
    """The staff pages' actor: the logged-in user, through the ``form`` channel."""
    return Actor.for_request(request, Channel.FORM)


def staff_view(permission: str = "") -> Callable[[View], View]:
    """Login required (to /app/login/), then the permission if one is named (else a 403 page).
    The services check their own permissions again: this only spares a page that would refuse."""

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            user = request.user
            if not user.is_authenticated:
                return redirect_to_login(request.get_full_path(), LOGIN_URL)
            if permission and not user.has_perm(permission):
                return render(
                    request,
                    "staff/forbidden.html",
                    {"message": _("You do not have the permission this page needs."), "permission": permission},
                    status=403,
                )
            return view(request, *args, **kwargs)

        return wrapped

    return decorate


def new_key(prefix: str) -> str:
    """An idempotency key a form carries from GET to POST: submitting twice does the write once."""
    return f"{prefix}-form-{uuid.uuid4().hex}"


class FieldErrors:
    """Errors by the form field they belong to; those naming no shown field go to ``general``."""

    def __init__(self, fields: tuple[str, ...] | list[str]) -> None:
        self.fields = set(fields)
        self.by_field: dict[str, list[dict[str, str]]] = {}
        self.general: list[dict[str, str]] = []

    def add(self, error: ApplicationError, *, aliases: dict[str, str] | None = None) -> None:
        name = (aliases or {}).get(error.field or "", error.field or "")
        # A dotted field (changes.text, schedule.send_at) belongs to its last part's input.
        if name not in self.fields and "." in name:
            name = name.rsplit(".", 1)[-1]
        entry = {"code": str(error.code), "message": error.message, "hint": error.hint or ""}
        if name in self.fields:
            self.by_field.setdefault(name, []).append(entry)
        else:
            self.general.append({**entry, "field": error.field or ""})

    def __bool__(self) -> bool:
        return bool(self.by_field or self.general)
