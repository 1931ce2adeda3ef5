"""Operators' admin for gateways: rates, sender IDs, applications, messages, and a test SMS.

Also the platform configuration's page: it edits through the governed write, which lives in
gateways/platform_config.py (the kernel, which owns the model, imports no app)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse

from gateways.config_form import error_field, section_changes, settings_fields, value_at
from gateways.delivery.queue import gateway_test_sms
from gateways.models import (
    Account,
    DeliveryQuarantine,
    DeliveryReceipt,
    Gateway,
    GatewayRate,
    InboundMessage,
    MessagePart,
    MessagePurpose,
    OutboundMessage,
    Provider,
    QuotaReservation,
    SenderId,
    SenderIdApplication,
)
from gateways.platform_config import platform_config_update
from gateways.quotas import TOP_UP_PERMISSION, account_top_up
from gateways.selectors import bind_status
from gateways.services import gateway_webhook_secret_rotate
from smsplatform.admin_utils import ReadOnlyAdminMixin, ServiceWriteAdminMixin, admin_actor, error_text
from smsplatform.config_service import LABEL, platform_config_data, platform_config_instance
from smsplatform.kernel.errors import ApplicationError
from smsplatform.kernel.phones import phone_mask
from smsplatform.kernel.versioning import version_token
from smsplatform.models import PlatformConfig


class RateInline(admin.TabularInline):
    model = GatewayRate
    extra = 0


class TestSmsForm(forms.Form):
    destination = forms.CharField(help_text="E.164, e.g. +85291234567 (a local HK number works too).")
    sender_id = forms.CharField(max_length=16)
    body = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), initial="Gateway test from the SMS platform")


@admin.register(Gateway)
class GatewayAdmin(admin.ModelAdmin):
    list_display = [
        "code",
        "name",
        "provider",
        "enabled",
        "priority",
        "countries",
        "max_rate_per_second",
        "fallback",
        "bind",
    ]
    list_filter = ["provider", "enabled"]
    inlines = [RateInline]
    actions = ["rotate_webhook_secret"]
    readonly_fields = ["webhook_secret_rotated_at", "kannel_get_url"]

    @admin.action(description="Rotate the webhook signing secret (old callback URLs work 48 h more)")
    def rotate_webhook_secret(self, request: HttpRequest, queryset: Any) -> None:
        for gateway in queryset.order_by("pk"):
            try:
                gateway_webhook_secret_rotate(actor=admin_actor(request), gateway_id=gateway.pk)
            except ApplicationError as exc:
                self.message_user(request, error_text(exc), messages.ERROR)
                return
            self.message_user(request, f"{gateway.code}: new webhook secret; hand Kannel its new URLs.")

    @admin.display(description="Kannel get-url (sms-service)")
    def kannel_get_url(self, obj: Gateway | None) -> str:
        """What kannel.conf's sms-service needs, signed with this gateway's webhook secret (its
        dlr-urls are signed the same way per message)."""
        if obj is None or obj.pk is None or obj.provider != Provider.KANNEL:
            return "—"
        from gateways.adapters.kannel import KannelAdapter

        return KannelAdapter(obj).inbound_url()

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).select_related("fallback").prefetch_related("bind_workers")

    @admin.display(description="SMPP bind")
    def bind(self, obj: Gateway) -> str:
        status = bind_status(obj, obj.bind_workers.all())
        if status is None:
            return "—"
        text = {"bound": "bound", "down": "DOWN", "no_worker": "no worker running"}[status["state"]]
        if status["state"] == "down":
            text += f" since {status['since'][:19]}"
            if status["failing_over_to"]:
                text += f", failing over to {status['failing_over_to']}"
            if status["last_error"]:
                text += f" ({status['last_error'][:80]})"
        elif status["workers"] > 1:
            text += f" ({status['workers']} workers)"
        return text

    change_form_template = "admin/gateways/gateway/change_form.html"

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # disable instead: messages keep their gateway

    def get_urls(self) -> list[Any]:
        test_sms = path(
            "<int:object_id>/test-sms/",
            self.admin_site.admin_view(self.test_sms_view),
            name="gateways_gateway_test_sms",
        )
        return [test_sms, *super().get_urls()]

    def test_sms_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        gateway = get_object_or_404(Gateway, pk=object_id)
        if not request.user.has_perm("gateways.send_test_sms"):
            messages.error(request, "You lack the permission to send test SMS.")
            return HttpResponseRedirect(reverse("admin:gateways_gateway_change", args=[object_id]))
        form = TestSmsForm(request.POST or None, initial={"sender_id": platform_config_data()["default_sender_id"]})
        if request.method == "POST" and form.is_valid():
            try:
                message = gateway_test_sms(actor=admin_actor(request), gateway_code=gateway.code, **form.cleaned_data)
            except ApplicationError as exc:
                field = exc.field if exc.field in form.fields else None
                form.add_error(field, error_text(exc))
            else:
                messages.success(
                    request,
                    f"Test SMS #{message.pk} queued to {phone_mask(message.destination)} "
                    f"({message.segments} segment(s), {message.currency} {message.cost}). "
                    "Follow it under Outbound messages.",
                )
                return HttpResponseRedirect(reverse("admin:gateways_outboundmessage_change", args=[message.pk]))
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "gateway": gateway,
            "opts": self.model._meta,
            "title": f"Send a test SMS through {gateway}",
        }
        return TemplateResponse(request, "admin/gateways/gateway/test_sms.html", context)


@admin.register(SenderId)
class SenderIdAdmin(admin.ModelAdmin):
    list_display = ["value", "kind", "brand", "status", "regions", "ssrs_registered_regions", "registered_at"]
    list_filter = ["kind", "status"]
    search_fields = ["value", "brand"]


@admin.register(SenderIdApplication)
class SenderIdApplicationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["reference", "version", "sender_id", "brand", "company_name", "status", "created_by", "created_at"]
    list_filter = ["status"]
    search_fields = ["reference", "sender_id", "brand", "company_name"]


class TopUpForm(forms.Form):
    amount = forms.DecimalField(max_digits=14, decimal_places=4, min_value=Decimal("0.0001"))
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), help_text="Why (audited), e.g. the invoice.")
    # Fixed when the page is drawn, so a double submit replays the first top-up instead of adding twice.
    idempotency_key = forms.CharField(widget=forms.HiddenInput)


@admin.register(Account)
class AccountAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["currency", "balance", "monthly_quota_segments", "segments_used", "period_start"]
    change_list_template = "admin/gateways/account/change_list.html"

    def get_urls(self) -> list[Any]:
        top_up = path("top-up/", self.admin_site.admin_view(self.top_up_view), name="gateways_account_top_up")
        return [top_up, *super().get_urls()]

    def top_up_view(self, request: HttpRequest) -> HttpResponse:
        """Parse, call account_top_up, show its coded errors on the form (STYLE 19)."""
        changelist = reverse("admin:gateways_account_changelist")
        if not request.user.has_perm(TOP_UP_PERMISSION):
            messages.error(request, "You lack the permission to top up the account.")
            return HttpResponseRedirect(changelist)
        form = TopUpForm(request.POST or None, initial={"idempotency_key": f"admin-top-up-{uuid.uuid4()}"})
        if request.method == "POST" and form.is_valid():
            try:
                result = account_top_up(actor=admin_actor(request), **form.cleaned_data)
            except ApplicationError as exc:
                form.add_error(exc.field if exc.field in form.fields else None, error_text(exc))
            else:
                messages.success(
                    request,
                    f"Added {result['currency']} {result['amount']}: the balance is now "
                    f"{result['currency']} {result['balance']}.",
                )
                return HttpResponseRedirect(changelist)
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "opts": self.model._meta,
            "title": "Top up the account",
        }
        return TemplateResponse(request, "admin/gateways/account/top_up.html", context)


@admin.register(QuotaReservation)
class QuotaReservationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["reference", "segments", "amount_text", "state", "settled_segments", "settled_text", "created_at"]
    list_filter = ["state"]

    @admin.display(description="amount", ordering="amount")
    def amount_text(self, obj: QuotaReservation) -> str:
        return f"{obj.amount} {obj.currency}"

    @admin.display(description="settled amount", ordering="settled_amount")
    def settled_text(self, obj: QuotaReservation) -> str:
        return f"{obj.settled_amount} {obj.currency}"


class PartInline(admin.TabularInline):
    model = MessagePart
    extra = 0
    can_delete = False
    readonly_fields = ["part_number", "provider_message_id", "gateway", "state", "error_code", "receipt_at"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(OutboundMessage)
class OutboundMessageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "masked_destination", "gateway", "purpose", "state", "segments", "cost_text", "created_at"]
    list_filter = ["state", "purpose", "gateway"]
    search_fields = ["reference"]
    inlines = [PartInline]

    @admin.display(description="cost", ordering="cost")
    def cost_text(self, obj: OutboundMessage) -> str:
        return f"{obj.cost} {obj.currency}"

    @admin.display(description="destination")
    def masked_destination(self, obj: OutboundMessage) -> str:
        return phone_mask(obj.destination)

    @admin.display(description="body")
    def body_shown(self, obj: OutboundMessage) -> str:
        # An OTP message carries its code until the scrub rewrites it: never shown here.
        if obj.purpose == MessagePurpose.OTP:
            return "(one-time code message: the body is not shown)"
        return obj.body

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = [
            "body_shown" if f.name == "body" else f.name
            for f in OutboundMessage._meta.fields
            if f.name not in {"id", "destination"}
        ]
        # Full numbers only for roles allowed to see them (minimal personal data).
        phone = "destination" if request.user.has_perm("compliance.view_full_phone") else "masked_destination"
        return [phone, *fields]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.get_fields(request, obj)

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).select_related("gateway")


@admin.register(DeliveryReceipt)
class DeliveryReceiptAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["received_at", "gateway", "provider_message_id", "status", "provider_status", "applied_at"]
    list_filter = ["status", "gateway"]


@admin.register(DeliveryQuarantine)
class DeliveryQuarantineAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Receipts, answers and MOs the database refused, with its reason (see gateways.delivery.quarantine)."""

    list_display = ["created_at", "gateway", "kind", "provider_message_id", "message_id", "reason"]
    list_filter = ["kind", "gateway"]
    search_fields = ["provider_message_id"]


@admin.register(InboundMessage)
class InboundMessageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["received_at", "gateway", "masked_source", "body", "handled_at"]
    exclude = ["source"]

    @admin.display(description="from")
    def masked_source(self, obj: InboundMessage) -> str:
        return phone_mask(obj.source)


CONFIG_FIELDS = ["default_sender_id", "default_gateway"]
# Each setting of each section, typed from the schema (gateways/config_form.py).
SETTINGS = settings_fields()
SETTING_PATHS = {name: path for name, (path, _field) in SETTINGS.items()}


class PlatformConfigFormBase(forms.ModelForm):
    """Edits go through platform_config_update: validated, versioned, audited, maybe held for approval.

    A typed field per setting, grouped per section; the sections changed are sent whole."""

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
            for name, path in SETTING_PATHS.items():
                self.initial[name] = value_at(current, path)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        current = platform_config_data()
        changes: dict[str, Any] = {
            name: cleaned[name] for name in CONFIG_FIELDS if (cleaned.get(name) or "") != current[name]
        }
        changes |= section_changes(cleaned, current, SETTING_PATHS)
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
            self.add_error(error_field(exc.field, set(self.fields)), error_text(exc))
        return cleaned


# The typed fields are declared on the class (the admin builds its form from declared fields).
PlatformConfigForm = type(
    "PlatformConfigForm", (PlatformConfigFormBase,), {name: field for name, (_path, field) in SETTINGS.items()}
)


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

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        sections: dict[str, list[str]] = {}
        for name, where in SETTING_PATHS.items():
            sections.setdefault(where[0], []).append(name)
        return [
            (None, {"fields": [*CONFIG_FIELDS, "version", "updated_at", "updated_by"]}),
            *(
                (section.replace("_", " ").capitalize(), {"fields": names, "classes": ["collapse"]})
                for section, names in sections.items()
            ),
            ("Why", {"fields": ["reason", "base_version_token", "idempotency_key"]}),
        ]

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
