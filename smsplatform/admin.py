"""Admin for the kernel: configuration versions, audit log and notification outbox (read-only), API tokens.

The configuration's own page edits through the governed write, so it is registered with that
write in gateways/admin.py (the kernel imports no app)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest

from smsplatform.admin_utils import ReadOnlyAdminMixin, pretty_json
from smsplatform.models import ApiToken, AuditLog, Notification, PlatformConfigVersion


@admin.register(PlatformConfigVersion)
class PlatformConfigVersionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["version", "created_at", "created_by", "reason"]
    readonly_fields = ["version", "created_at", "created_by", "reason", "data_pretty"]
    exclude = ["data"]

    @admin.display(description="data")
    def data_pretty(self, obj: PlatformConfigVersion) -> str:
        return pretty_json(obj.data)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("smsplatform.view_platformconfig")


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "at",
        "action",
        "object_type",
        "object_id",
        "user",
        "channel",
        "token_name",
        "action_request_id",
    ]
    list_filter = ["action", "channel", "object_type"]
    search_fields = ["action", "object_id", "reason", "user__username", "token_name"]
    date_hierarchy = "at"
    readonly_fields = [
        "at",
        "user",
        "channel",
        "token_name",
        "action",
        "object_type",
        "object_id",
        "before_pretty",
        "after_pretty",
        "reason",
        "action_request_id",
        "idempotency_key",
    ]
    exclude = ["before", "after"]

    @admin.display(description="before")
    def before_pretty(self, obj: AuditLog) -> str:
        return pretty_json(obj.before)

    @admin.display(description="after")
    def after_pretty(self, obj: AuditLog) -> str:
        return pretty_json(obj.after)

    # Append-only: nobody adds, edits or deletes through the admin.


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The outbox, to see what was sent, what is waiting and why something failed. Read-only:
    rows are written by the changes they report and moved on only by the send task."""

    list_display = [
        "created_at",
        "subject",
        "state",
        "attempts",
        "sent_at",
        "next_attempt_at",
        "object_type",
        "object_id",
    ]
    list_filter = ["state", "object_type"]
    search_fields = ["subject", "object_id", "last_error"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "created_at",
        "object_type",
        "object_id",
        "recipients",
        "subject",
        "body",
        "state",
        "attempts",
        "next_attempt_at",
        "lease_until",
        "last_error",
        "sent_at",
    ]


class ApiTokenForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ["user", "name"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "user",
        "prefix",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = ["revoked_at"]
    search_fields = ["name", "user__username"]
    actions = ["revoke"]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = ApiTokenForm
        return super().get_form(request, obj, change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ["user", "name", "prefix", "created_at", "last_used_at"] if obj else []

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        token, key = ApiToken.issue(user=obj.user, name=obj.name)
        obj.pk = token.pk
        # The key is shown exactly once; only its hash is stored.
        messages.warning(
            request,
            f"New token for {obj.user}: {key}  — copy it now, it is not shown again.",
        )

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset: Any) -> None:
        from django.utils import timezone

        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        messages.success(request, f"Revoked {count} token(s).")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
