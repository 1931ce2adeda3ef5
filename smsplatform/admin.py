"""Admin for the kernel: configuration editing (governed), audit log and notification outbox (read-only),
API tokens."""

from __future__ import annotations

import json
import uuid
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse

from smsplatform.admin_utils import ServiceWriteAdminMixin, admin_actor, error_text, pretty_json
from smsplatform.config_schema import SECTIONS
from smsplatform.config_service import (
    LABEL,
    platform_config_data,
    platform_config_instance,
    platform_config_update,
)
from smsplatform.kernel.errors import ApplicationError
from smsplatform.kernel.versioning import version_token
from smsplatform.models import ApiToken, AuditLog, Notification, PlatformConfig, PlatformConfigVersion


class PrettyJSONField(forms.JSONField):
    def prepare_value(self, value: Any) -> str:
        if isinstance(value, str):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


CONFIG_FIELDS = ["default_sender_id", "default_gateway", *SECTIONS]


class PlatformConfigForm(forms.ModelForm):
    """Edits go through platform_config_update: validated, versioned, audited, maybe held for approval."""

    base_version_token = forms.CharField(widget=forms.HiddenInput)
    idempotency_key = forms.CharField(widget=forms.HiddenInput)
    reason = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Why (audited).",
    )

    class Meta:
        model = PlatformConfig
        fields = CONFIG_FIELDS
        field_classes = dict.fromkeys(SECTIONS, PrettyJSONField)
        widgets = {name: forms.Textarea(attrs={"rows": 12, "cols": 90}) for name in SECTIONS}

    request: HttpRequest
    result: dict[str, Any] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound and self.instance.pk:
            self.initial["base_version_token"] = version_token(LABEL, self.instance.pk, self.instance.version)
            self.initial["idempotency_key"] = f"admin-config-{uuid.uuid4()}"
            current = platform_config_data()
            for name in CONFIG_FIELDS:
                self.initial[name] = current[name]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        current = platform_config_data()
        changes = {name: cleaned[name] for name in CONFIG_FIELDS if cleaned.get(name) != current[name]}
        if not changes:
            raise forms.ValidationError("Nothing changed.")
        try:
            self.result = platform_config_update(
                actor=admin_actor(self.request),
                changes=changes,
                base_version_token=cleaned["base_version_token"],
                idempotency_key=cleaned["idempotency_key"],
                reason=cleaned.get("reason", ""),
            )
        except ApplicationError as exc:
            field = (exc.field or "").removeprefix("changes.").split(".")[0]
            self.add_error(field if field in self.fields else None, error_text(exc))
        return cleaned


@admin.register(PlatformConfig)
class PlatformConfigAdmin(ServiceWriteAdminMixin, admin.ModelAdmin):
    form = PlatformConfigForm
    list_display = [
        "__str__",
        "default_sender_id",
        "default_gateway",
        "updated_at",
        "updated_by",
    ]
    readonly_fields = ["version", "updated_at", "updated_by"]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form_class = super().get_form(request, obj, change, **kwargs)
        return type("BoundPlatformConfigForm", (form_class,), {"request": request})

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        # One configuration: go straight to it.
        config = platform_config_instance()
        return HttpResponseRedirect(reverse("admin:smsplatform_platformconfig_change", args=[config.pk]))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        # The service already wrote (or queued) the change in form.clean(); report what happened.
        result = form.result or {}
        if result.get("status") == "pending_approval":
            messages.warning(
                request,
                f"Change held for approval as request #{result['action_request_id']} "
                f"(role: {result['required_role']}).",
            )
        else:
            messages.success(
                request,
                f"Configuration is now version {result.get('result', {}).get('version')}.",
            )

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        return None  # the platform audit log has the record

    def response_change(self, request: HttpRequest, obj: Any) -> Any:
        return HttpResponseRedirect(reverse("admin:smsplatform_platformconfig_change", args=[obj.pk]))


@admin.register(PlatformConfigVersion)
class PlatformConfigVersionAdmin(admin.ModelAdmin):
    list_display = ["version", "created_at", "created_by", "reason"]
    readonly_fields = ["version", "created_at", "created_by", "reason", "data_pretty"]
    exclude = ["data"]

    @admin.display(description="data")
    def data_pretty(self, obj: PlatformConfigVersion) -> str:
        return pretty_json(obj.data)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("smsplatform.view_platformconfig")


@admin.register(AuditLog)
class AuditLogAdmin(admin.ModelAdmin):
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
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
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

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


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
