"""Helpers shared by the admin classes: the actor, pretty JSON, error messages."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.csrf import csrf_protect

from smsplatform.kernel.actor import Actor, Channel
from smsplatform.kernel.errors import ApplicationError


def admin_actor(request: HttpRequest) -> Actor:
    return Actor(user=request.user, channel=Channel.ADMIN)


def pretty_json(value: Any) -> str:
    return format_html(
        '<pre style="white-space:pre-wrap;max-width:60em">{}</pre>',
        json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str),
    )


def error_text(exc: ApplicationError) -> str:
    parts = [exc.message]
    if exc.field:
        parts.append(f"(field: {exc.field})")
    if exc.hint:
        parts.append(exc.hint)
    return " ".join(parts)


class ServiceWriteAdminMixin:
    """Admin pages whose saves call a durable top-level service.

    Django wraps changeform_view in transaction.atomic(), and a durable service
    cannot run nested in it. The services own their transactions (STYLE 4), so
    these pages run the form handling outside that wrapper.
    """

    @method_decorator(csrf_protect)
    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> Any:
        return self._changeform_view(request, object_id, form_url, extra_context)  # type: ignore[attr-defined]
