"""REST views of the OTP app: templates (list, request a version), verifications (send, status, check)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from campaigns.otp.models import Alphabet, Locale, OtpPurpose
from campaigns.otp.selectors import VIEW_TEMPLATES, otp_templates_list, verification_get
from campaigns.otp.services import (
    ADD_TEMPLATE,
    CHECK_PERMISSION,
    SEND_PERMISSION,
    otp_check,
    otp_send,
    otp_template_save,
    otp_verification_cancel,
)
from smsplatform.api.base import ServiceApiView, StrictInput
from smsplatform.api.schema import governed_responses, list_output, read_responses
from smsplatform.api.views import governed_response

VERIFICATION_OUTPUT = inline_serializer(
    "OtpVerificationOutput",
    {
        "verification_id": serializers.CharField(),
        "template_id": serializers.IntegerField(),
        "phone": serializers.CharField(help_text="Masked."),
        "country": serializers.CharField(),
        "locale": serializers.CharField(),
        "status": serializers.ChoiceField(choices=["pending", "approved", "expired", "locked", "canceled"]),
        "expires_at": serializers.DateTimeField(),
        "sends_used": serializers.IntegerField(),
        "sends_remaining": serializers.IntegerField(),
        "checks_used": serializers.IntegerField(),
        "checks_remaining": serializers.IntegerField(),
        "delivery_state": serializers.CharField(allow_null=True),
        "deliveries": serializers.ListField(child=serializers.DictField()),
    },
)
CHECK_OUTPUT = inline_serializer(
    "OtpCheckOutput",
    {
        "verification_id": serializers.CharField(),
        "status": serializers.ChoiceField(choices=["pending", "approved", "locked"]),
        "valid": serializers.BooleanField(),
        "checks_used": serializers.IntegerField(),
        "checks_remaining": serializers.IntegerField(),
    },
)


class OtpTemplateListApi(ServiceApiView):
    required_permissions = {"GET": VIEW_TEMPLATES, "POST": ADD_TEMPLATE}

    class SaveInput(StrictInput):
        class Content(StrictInput):
            name = serializers.CharField(max_length=100, required=False)
            purpose = serializers.ChoiceField(choices=OtpPurpose.values, required=False)
            body_en = serializers.CharField(required=False, trim_whitespace=False)
            body_zh_hant = serializers.CharField(required=False, trim_whitespace=False)
            code_length = serializers.IntegerField(required=False)
            alphabet = serializers.ChoiceField(choices=Alphabet.values, required=False)
            validity_minutes = serializers.IntegerField(required=False)
            max_checks = serializers.IntegerField(required=False)
            max_sends = serializers.IntegerField(required=False)
            limits = serializers.DictField(required=False)
            gateway = serializers.CharField(required=False, allow_blank=True)
            fallback_gateway = serializers.CharField(required=False, allow_blank=True)
            allowed_countries = serializers.ListField(child=serializers.CharField(), required=False)
            sender_id = serializers.CharField(required=False)
            single_segment_required = serializers.BooleanField(required=False)

        template_id = serializers.IntegerField(required=False, allow_null=True, default=None)
        base_version_token = serializers.CharField(required=False, allow_null=True, default=None)
        content = Content()
        reason = serializers.CharField(max_length=1000, required=False, allow_blank=True, default="")
        idempotency_key = serializers.CharField(max_length=200)

    @extend_schema(
        operation_id="otp_templates_list",
        summary="OTP templates: validity, limits, gateways, regions, approval (sms_marketing.otp_templates.list)",
        responses=read_responses(list_output("OtpTemplateListOutput", "templates")),
    )
    def get(self, request: Request) -> Response:
        items = otp_templates_list(actor=self.actor(request))
        return Response({"templates": items, "count": len(items)})

    @extend_schema(
        operation_id="otp_template_save",
        summary="Request a new OTP template or version; always held for an approver (202)",
        request=SaveInput,
        responses=governed_responses(404, 409),
    )
    def post(self, request: Request) -> Response:
        data = self.SaveInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields: dict[str, Any] = dict(data.validated_data)
        return governed_response(
            otp_template_save(
                actor=self.actor(request),
                idempotency_key=fields["idempotency_key"],
                template_id=fields["template_id"],
                base_version_token=fields["base_version_token"],
                content=dict(fields["content"]),
                reason=fields["reason"],
            )
        )


class VerificationSendApi(ServiceApiView):
    required_permissions = {"POST": SEND_PERMISSION}

    class SendInput(StrictInput):
        template_id = serializers.IntegerField(min_value=1)
        phone = serializers.CharField(max_length=32)
        locale = serializers.ChoiceField(choices=Locale.values, default=Locale.EN)
        client_ip = serializers.CharField(max_length=45, required=False, allow_null=True, default=None)
        reason = serializers.CharField(max_length=1000, required=False, allow_blank=True, default="")
        idempotency_key = serializers.CharField(max_length=200)

    @extend_schema(
        operation_id="otp_send",
        summary="Send a code: start or resend a verification (sms_marketing.otp.send); never returns the code",
        request=SendInput,
        responses=governed_responses(404, 409),
    )
    def post(self, request: Request) -> Response:
        data = self.SendInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        return governed_response(otp_send(actor=self.actor(request), **fields))


class VerificationDetailApi(ServiceApiView):
    @extend_schema(
        operation_id="otp_verification_get",
        summary="A verification's status, counters and delivery state",
        responses=read_responses(VERIFICATION_OUTPUT, 404),
    )
    def get(self, request: Request, verification_id: str) -> Response:
        return Response(verification_get(actor=self.actor(request), verification_id=verification_id))


class VerificationCheckApi(ServiceApiView):
    required_permissions = {"POST": CHECK_PERMISSION}

    class CheckInput(StrictInput):
        code = serializers.CharField(max_length=20)

    @extend_schema(
        operation_id="otp_check",
        summary="Check a code (the business backend): approved once, at most max_checks, never after expiry",
        request=CheckInput,
        responses=read_responses(CHECK_OUTPUT, 404),
    )
    def post(self, request: Request, verification_id: str) -> Response:
        data = self.CheckInput(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(
            otp_check(actor=self.actor(request), verification_id=verification_id, code=data.validated_data["code"])
        )


class VerificationCancelApi(ServiceApiView):
    @extend_schema(
        operation_id="otp_verification_cancel",
        summary="Cancel a pending verification: no check passes afterwards",
        request=None,
        responses=read_responses(VERIFICATION_OUTPUT, 404),
    )
    def post(self, request: Request, verification_id: str) -> Response:
        return Response(otp_verification_cancel(actor=self.actor(request), verification_id=verification_id))
