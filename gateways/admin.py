"""Operators' admin for gateways: rates, sender IDs, applications, messages, and a test SMS."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse

from gateways.delivery import gateway_test_sms
from gateways.models import (
    Account,
    DeliveryReceipt,
    Gateway,
    GatewayRate,
    InboundMessage,
    MessagePart,
    OutboundMessage,
    QuotaReservation,
    SenderId,
    SenderIdApplication,
)
from gateways.selectors import bind_status
from smsplatform.admin_utils import admin_actor, error_text
from smsplatform.config_service import platform_config_data
from smsplatform.kernel.errors import ApplicationError
from smsplatform.kernel.phones import phone_mask


class RateInline(admin.TabularInline):
    model = GatewayRate
    extra = 0


class TestSmsForm(forms.Form):
    destination = forms.CharField(help_text="E.164, e.g. +85291234567 (a local HK number works too).")
    sender_id = forms.CharField(max_length=16)
    body = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), initial="Gateway test from the SMS platform")


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


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
class SenderIdApplicationAdmin(ReadOnlyAdmin):
    list_display = ["reference", "version", "sender_id", "brand", "company_name", "status", "created_by", "created_at"]
    list_filter = ["status"]
    search_fields = ["reference", "sender_id", "brand", "company_name"]


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    list_display = ["currency", "balance", "monthly_quota_segments", "segments_used", "period_start"]


@admin.register(QuotaReservation)
class QuotaReservationAdmin(ReadOnlyAdmin):
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
class OutboundMessageAdmin(ReadOnlyAdmin):
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

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = [f.name for f in OutboundMessage._meta.fields if f.name not in {"id", "destination"}]
        # Full numbers only for roles allowed to see them (minimal personal data).
        phone = "destination" if request.user.has_perm("compliance.view_full_phone") else "masked_destination"
        return [phone, *fields]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.get_fields(request, obj)

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).select_related("gateway")


@admin.register(DeliveryReceipt)
class DeliveryReceiptAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "gateway", "provider_message_id", "status", "provider_status", "applied_at"]
    list_filter = ["status", "gateway"]


@admin.register(InboundMessage)
class InboundMessageAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "gateway", "masked_source", "body", "handled_at"]
    exclude = ["source"]

    @admin.display(description="from")
    def masked_source(self, obj: InboundMessage) -> str:
        return phone_mask(obj.source)
