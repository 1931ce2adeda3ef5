"""Helpers shared by the admin classes: the actor, readable values, pretty JSON, error messages."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.views.decorators.csrf import csrf_protect

from smsplatform.kernel.actor import Actor, Channel
from smsplatform.kernel.errors import ApplicationError


def admin_actor(request: HttpRequest) -> Actor:
    return Actor.for_request(request, Channel.ADMIN)


def pretty_json(value: Any) -> str:
    return format_html(
        '<pre style="white-space:pre-wrap;max-width:60em">{}</pre>',
        json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str),
    )


def amounts_text(amounts: Any, currency: str | None = None) -> str:
    """Money as people read it: ``{"HKD": "26.60"}`` -> ``26.60 HKD``; a bare amount gets the
    currency when it is known."""
    if isinstance(amounts, dict):
        return ", ".join(f"{amount} {code}" for code, amount in amounts.items()) or "nothing"
    if amounts in (None, ""):
        return "—"
    return f"{amounts} {currency}" if currency else str(amounts)


def _label(key: Any) -> str:
    return str(key).replace("_", " ")


def readable(value: Any) -> SafeString:
    """Any JSON value as HTML a person reads (nested tables of labelled rows, lists joined, yes/no),
    never a Python repr or a JSON dump."""
    if isinstance(value, dict):
        if not value:
            return format_html("{}", "—")
        rows = format_html_join(
            "",
            '<tr><th scope="row">{}</th><td>{}</td></tr>',
            ((_label(key), readable(item)) for key, item in value.items()),
        )
        return format_html('<table class="readable">{}</table>', rows)
    if isinstance(value, list | tuple):
        if not value:
            return format_html("{}", "none")
        if all(not isinstance(item, dict | list | tuple) for item in value):
            return format_html_join(", ", "{}", ((readable(item),) for item in value))
        return format_html("<ol>{}</ol>", format_html_join("", "<li>{}</li>", ((readable(item),) for item in value)))
    if value is None:
        return format_html("{}", "—")
    if isinstance(value, bool):
        return format_html("{}", "yes" if value else "no")
    return format_html("{}", value)


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


class ReadOnlyAdminMixin:
    """An admin page (or inline) that shows rows and never adds, changes or deletes them: what it
    shows is written by services (audited), not by a form. Put it before the admin base class."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
