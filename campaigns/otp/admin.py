"""Admin of the OTP app: templates with their approval state, requests for new templates or versions
(always held for an approver, who decides on the action-request page), verifications (masked, no
hash) and the "send a test code" form. Every write goes through the same services as MCP and REST."""

from __future__ import annotations

import json
import uuid
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from campaigns.otp.models import Alphabet, Locale, OtpPurpose, OtpTemplate, Verification
from campaigns.otp.rules import DEFAULT_LIMITS
from campaigns.otp.selectors import template_listing
from campaigns.otp.services import ADD_TEMPLATE, SEND_PERMISSION, content_of, otp_send, otp_template_save
from smsplatform.admin_utils import ReadOnlyAdminMixin, admin_actor, error_text, readable
from smsplatform.kernel.errors import ApplicationError
from smsplatform.kernel.phones import phone_mask


def _new_key() -> str:
    return f"admin-{uuid.uuid4()}"


class KeyedForm(forms.Form):
    # Rendered once per page: a double submit of one page replays its first result.
    idempotency_key = forms.CharField(widget=forms.HiddenInput, initial=_new_key, required=False)

    def key(self) -> str:
        return str(self.cleaned_data.get("idempotency_key") or _new_key())


class OtpTemplateForm(KeyedForm):
    name = forms.CharField(max_length=100)
    purpose = forms.ChoiceField(choices=OtpPurpose.choices)
    body_en = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}), strip=False, help_text="With {code}; {minutes} optional."
    )
    body_zh_hant = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), strip=False)
    code_length = forms.IntegerField(initial=6)
    alphabet = forms.ChoiceField(choices=Alphabet.choices)
    validity_minutes = forms.IntegerField(initial=10)
    max_checks = forms.IntegerField(initial=5)
    max_sends = forms.IntegerField(initial=5)
    limits = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}), initial=json.dumps(DEFAULT_LIMITS))
    gateway = forms.CharField(required=False)
    fallback_gateway = forms.CharField(required=False)
    allowed_countries = forms.CharField(help_text="ISO codes, comma separated, e.g. HK,MO")
    sender_id = forms.CharField(max_length=16)
    single_segment_required = forms.BooleanField(required=False, initial=True)
    reason = forms.CharField(required=False)

    def content(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        data.pop("reason", None)
        data.pop("idempotency_key", None)
        try:
            data["limits"] = json.loads(data["limits"])
        except ValueError:
            data["limits"] = "not JSON"  # the service names the field
        data["allowed_countries"] = [c.strip().upper() for c in data["allowed_countries"].split(",") if c.strip()]
        return data


class SendTestForm(KeyedForm):
    phone = forms.CharField(help_text="E.164, e.g. +85291234567.")
    locale = forms.ChoiceField(choices=Locale.choices)


def _form_error(form: forms.Form, exc: ApplicationError) -> None:
    field = exc.field.split(".")[0] if exc.field else None
    form.add_error(field if field in form.fields else None, error_text(exc))


@admin.register(OtpTemplate)
class OtpTemplateAdmin(admin.ModelAdmin):
    list_display = ["name", "purpose", "version", "approval_state", "validity", "countries", "links"]
    list_filter = ["purpose"]
    fields = ("name", "purpose", "version", "approval_state", "approved_version", "requested_version")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # requests go through request_view: always held for an approver

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def _listed(self, obj: OtpTemplate) -> dict[str, Any]:
        return template_listing(obj)

    @admin.display(description="approval state")
    def approval_state(self, obj: OtpTemplate) -> str:
        return str(self._listed(obj).get("approval_state", ""))

    @admin.display(description="validity (min)")
    def validity(self, obj: OtpTemplate) -> Any:
        return obj.current_version.validity_minutes if obj.current_version else "—"

    @admin.display(description="regions")
    def countries(self, obj: OtpTemplate) -> str:
        return ", ".join(obj.current_version.allowed_countries) if obj.current_version else "—"

    @admin.display(description="approved version (what sends use)")
    def approved_version(self, obj: OtpTemplate) -> Any:
        return readable(self._listed(obj).get("approved"))

    @admin.display(description="requested version")
    def requested_version(self, obj: OtpTemplate) -> Any:
        return readable(self._listed(obj).get("requested"))

    @admin.display(description="")
    def links(self, obj: OtpTemplate) -> str:
        return format_html(
            '<a href="{}">request a new version</a> · <a href="{}">send a test code</a>',
            reverse("admin:otp_otptemplate_request_version", args=[obj.pk]),
            reverse("admin:otp_otptemplate_send_test", args=[obj.pk]),
        )

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).select_related("current_version")

    def get_urls(self) -> list[Any]:
        return [
            path("request/", self.admin_site.admin_view(self.request_view), name="otp_otptemplate_request"),
            path(
                "<int:object_id>/request/",
                self.admin_site.admin_view(self.request_view),
                name="otp_otptemplate_request_version",
            ),
            path(
                "<int:object_id>/send-test/",
                self.admin_site.admin_view(self.send_test_view),
                name="otp_otptemplate_send_test",
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        extra = {**(extra_context or {}), "title": "OTP templates (request a new one at ./request/)"}
        return super().changelist_view(request, extra)

    def request_view(self, request: HttpRequest, object_id: int | None = None) -> HttpResponse:
        template = get_object_or_404(OtpTemplate, pk=object_id) if object_id is not None else None
        if not request.user.has_perm(ADD_TEMPLATE):
            messages.error(request, "You lack the permission to request OTP templates.")
            return HttpResponseRedirect(reverse("admin:otp_otptemplate_changelist"))
        initial: dict[str, Any] = {}
        if template is not None and template.current_version is not None:
            initial = content_of(template.current_version)
            initial["limits"] = json.dumps(initial["limits"])
            initial["allowed_countries"] = ",".join(initial["allowed_countries"])
        form = OtpTemplateForm(request.POST or None, initial=initial)
        if request.method == "POST" and form.is_valid():
            try:
                base = template_listing(template)["base_version_token"] if template else None
                result = otp_template_save(
                    actor=admin_actor(request),
                    idempotency_key=form.key(),
                    template_id=template.pk if template else None,
                    base_version_token=base,
                    content=form.content(),
                    reason=form.cleaned_data.get("reason") or "",
                )
            except ApplicationError as exc:
                _form_error(form, exc)
            else:
                messages.success(
                    request,
                    f"Held for approval as action request #{result.get('action_request_id')}: another person "
                    "with the approver role approves it under Action requests; until then nothing changes.",
                )
                return HttpResponseRedirect(reverse("admin:otp_otptemplate_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "opts": self.model._meta,
            "title": f"Request a new version of {template}" if template else "Request a new OTP template",
            "intro": "OTP templates carry no promotion, must contain {code} and fit one SMS when required. "
            "Every request is approved by another person before any code is sent with it.",
            "submit": "Request approval",
        }
        return TemplateResponse(request, "admin/otp/form.html", context)

    def send_test_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        template = get_object_or_404(OtpTemplate, pk=object_id)
        if not request.user.has_perm(SEND_PERMISSION):
            messages.error(request, "You lack the permission to send OTP codes.")
            return HttpResponseRedirect(reverse("admin:otp_otptemplate_changelist"))
        form = SendTestForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                result = otp_send(
                    actor=admin_actor(request),
                    template_id=template.pk,
                    phone=form.cleaned_data["phone"],
                    locale=form.cleaned_data["locale"],
                    client_ip=request.META.get("REMOTE_ADDR"),
                    idempotency_key=form.key(),
                    reason="admin test code",
                )
            except ApplicationError as exc:
                _form_error(form, exc)
            else:
                if result["status"] == "pending_approval":
                    messages.success(request, f"Held for approval as action request #{result['action_request_id']}.")
                else:
                    sent = result["result"]
                    messages.success(
                        request,
                        f"Code sent to {sent['phone']} in verification {sent['verification_id']} "
                        f"(send {sent['sends_used']}, {sent['sends_remaining']} left; "
                        f"expires {sent['expires_at'][:19]}). "
                        "The code is never shown: it is on the phone only.",
                    )
                return HttpResponseRedirect(reverse("admin:otp_verification_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "opts": self.model._meta,
            "title": f"Send a test code with {template}",
            "intro": "The same service as otp.send: limits, allowed countries and the approved version apply.",
            "submit": "Send test code",
        }
        return TemplateResponse(request, "admin/otp/form.html", context)


@admin.register(Verification)
class VerificationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    # Narrow enough for a 1,280 px screen beside the nav and filter sidebars (about 630 px): the id
    # shortened (in full on hover, in search and on its page), the template by name (the version a
    # code used is on its page), sends and checks as used/allowed, one time in a few characters
    # (the request and the expiry in full on hover).
    list_display = ["short_id", "masked_phone", "template_name", "status", "sends_used", "checks_used", "requested"]
    list_display_links = ["short_id"]
    list_filter = ["status", "template"]
    search_fields = ["public_id"]
    # Never the phone in full, never the code hash.
    fields = (
        "public_id",
        "masked_phone",
        "template",
        "template_version",
        "country",
        "locale",
        "status",
        "sends",
        "max_sends",
        "checks",
        "max_checks",
        "expires_at",
        "client_ip",
        "channel",
        "token_name",
        "created_at",
        "ended_at",
    )
    readonly_fields = fields

    @admin.display(description="phone")
    def masked_phone(self, obj: Verification) -> str:
        return phone_mask(obj.phone)

    @admin.display(description="verification", ordering="public_id")
    def short_id(self, obj: Verification) -> str:
        return format_html('<span title="{}">{}…</span>', obj.public_id, obj.public_id[:12])

    @admin.display(description="sends", ordering="sends")
    def sends_used(self, obj: Verification) -> str:
        return f"{obj.sends}/{obj.max_sends}"

    @admin.display(description="checks", ordering="checks")
    def checks_used(self, obj: Verification) -> str:
        return f"{obj.checks}/{obj.max_checks}"

    @admin.display(description="template", ordering="template__name")
    def template_name(self, obj: Verification) -> str:
        return obj.template.name

    @admin.display(description="when", ordering="created_at")
    def requested(self, obj: Verification) -> str:
        full = "%Y-%m-%d %H:%M:%S %Z"
        created, expires = timezone.localtime(obj.created_at), timezone.localtime(obj.expires_at)
        return format_html(
            '<span title="requested {}, expires {}">{}</span>',
            created.strftime(full),
            expires.strftime(full),
            created.strftime("%m-%d %H:%M"),
        )

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).select_related("template")


from campaigns.otp import admin_abuse  # noqa: E402, F401  (the abuse defence's pages: PumpingBlock, OtpRateCounter)
