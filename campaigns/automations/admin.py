"""Admin of the events intake: event sources (create, rotate the secret, read it with the
permission) and the events (read-only, phones masked)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest
from django.utils.html import format_html

from campaigns.automations.models import CommerceEvent, EventSource
from campaigns.automations.services import (
    SECRET_PERMISSION,
    event_source_create,
    event_source_secret_rotate,
)
from smsplatform.admin_utils import admin_actor, error_text, pretty_json
from smsplatform.kernel.errors import ApplicationError


class EventSourceForm(forms.ModelForm):
    class Meta:
        model = EventSource
        fields = ["code", "name", "enabled"]


@admin.register(EventSource)
class EventSourceAdmin(admin.ModelAdmin):
    form = EventSourceForm
    list_display = ["code", "name", "enabled", "created_by", "created_at", "secret_rotated_at"]
    list_filter = ["enabled"]
    search_fields = ["code", "name"]
    actions = ["rotate_secret"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return []
        return ["code", "signing_secret", "secret_rotated_at", "created_by", "created_at"]

    @admin.display(description="Signing secret")
    def signing_secret(self, obj: EventSource) -> str:
        """The secret only for accounts with view_event_source_secret; a mask for the others."""
        request = getattr(self, "_request", None)
        if request is not None and request.user.has_perm(SECRET_PERMISSION):
            return format_html("<code>{}</code>", obj.secret)
        return "•" * 12 + " (hidden: needs the permission to read event source secrets)"

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        self._request = request
        return super().get_form(request, obj, change=change, **kwargs)

    def save_model(self, request: HttpRequest, obj: EventSource, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        try:
            created = event_source_create(actor=admin_actor(request), code=obj.code, name=obj.name, enabled=obj.enabled)
        except ApplicationError as exc:
            raise forms.ValidationError(error_text(exc)) from exc
        obj.pk = created["source_id"]
        obj.refresh_from_db()
        self.message_user(
            request,
            format_html(
                "Event source {} created. Its signing secret (copy it now into the sending system): <code>{}</code>",
                obj.code,
                created["secret"],
            ),
            messages.WARNING,
        )

    @admin.action(description="Rotate the signing secret (the old one works 48 h more)")
    def rotate_secret(self, request: HttpRequest, queryset: Any) -> None:
        for source in queryset.order_by("pk"):
            try:
                rotated = event_source_secret_rotate(actor=admin_actor(request), source_id=source.pk)
            except ApplicationError as exc:
                self.message_user(request, error_text(exc), messages.ERROR)
                return
            self.message_user(
                request,
                format_html(
                    "{}: new signing secret <code>{}</code>; the previous one is accepted for 48 h.",
                    rotated["code"],
                    rotated["secret"],
                ),
                messages.WARNING,
            )

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # disable instead: events keep their source


_EVENT_FIELDS = (
    "source",
    "event_id",
    "type",
    "name",
    "contact_id",
    "masked_phone",
    "external_id",
    "occurred_at",
    "received_at",
    "order_ref",
    "amount",
    "currency",
    "refund_of",
    "coupon_code",
    "channel",
    "click_token",
    "link_code",
    "appointment_at",
    "pickup_at",
    "payload_pretty",
)


@admin.register(CommerceEvent)
class CommerceEventAdmin(admin.ModelAdmin):
    list_display = [
        "occurred_at",
        "type",
        "name",
        "source",
        "masked_phone",
        "contact_id",
        "order_ref",
        "amount",
        "currency",
        "channel",
        "received_at",
    ]
    list_filter = ["type", "source", "occurred_at", "received_at"]
    date_hierarchy = "occurred_at"
    search_fields = ["event_id", "order_ref", "refund_of"]
    list_select_related = ["source"]
    show_full_result_count = False
    fields = _EVENT_FIELDS
    readonly_fields = _EVENT_FIELDS

    @admin.display(description="Phone")
    def masked_phone(self, obj: CommerceEvent) -> str:
        return obj.phone_masked or "—"

    @admin.display(description="Payload")
    def payload_pretty(self, obj: CommerceEvent) -> str:
        return pretty_json(obj.payload)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the retention purge deletes events


# Flows and enrolments (their own module).
from campaigns.automations import flow_admin  # noqa: E402,F401
