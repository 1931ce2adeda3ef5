"""REST views of the gateways app, and of the platform configuration (its governed write is here)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from gateways.platform_config import platform_config_update
from gateways.quotas import quotas_get
from gateways.selectors import gateways_list, sender_ids_list
from gateways.services import sender_id_apply
from smsplatform.api.base import ServiceApiView, StrictInput
from smsplatform.api.schema import governed_responses, list_output, read_responses
from smsplatform.api.views import governed_response
from smsplatform.config_service import platform_config_get
from smsplatform.kernel.errors import ApplicationError, ErrorCode


class GatewayListApi(ServiceApiView):
    required_permissions = {"GET": "gateways.view_gateway"}

    @extend_schema(
        operation_id="gateways_list",
        summary="Gateways, coverage, rates (sms_marketing.gateways.list)",
        responses=read_responses(list_output("GatewayListOutput", "gateways")),
    )
    def get(self, request: Request) -> Response:
        items = gateways_list()
        return Response({"gateways": items, "count": len(items)})


class SenderIdListApi(ServiceApiView):
    required_permissions = {"GET": "gateways.view_senderid", "POST": "gateways.add_senderidapplication"}

    class ApplyInput(StrictInput):
        class Document(StrictInput):
            name = serializers.CharField(max_length=100)
            status = serializers.ChoiceField(choices=["provided", "missing", "verified"])
            reference = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")

        sender_id = serializers.CharField(max_length=16)
        brand = serializers.CharField(max_length=100)
        company_name = serializers.CharField(max_length=200)
        company_registration_no = serializers.CharField(max_length=50)
        purpose = serializers.CharField(max_length=2000)
        regions = serializers.ListField(child=serializers.RegexField(r"^[A-Z]{2}$"), min_length=1)
        documents = Document(many=True)
        reason = serializers.CharField(max_length=1000)
        reference = serializers.CharField(max_length=32, required=False, allow_blank=True, default="")
        idempotency_key = serializers.CharField(max_length=200)

    @extend_schema(
        operation_id="sender_ids_list",
        summary="Sender IDs and where they are usable (sms_marketing.sender_ids.list)",
        parameters=[OpenApiParameter("country", str)],
        responses=read_responses(list_output("SenderIdListOutput", "sender_ids")),
    )
    def get(self, request: Request) -> Response:
        country = request.query_params.get("country")
        if country and not (len(country) == 2 and country.isalpha() and country.isupper()):
            raise ApplicationError(ErrorCode.VALIDATION_ERROR, "country is an ISO code like HK.", field="country")
        items = sender_ids_list(country=country)
        return Response({"sender_ids": items, "count": len(items)})

    @extend_schema(
        operation_id="sender_id_apply",
        summary="Submit or update a sender ID / SSRS application (sms_marketing.sender_id.apply)",
        request=ApplyInput,
        responses=governed_responses(409),
    )
    def post(self, request: Request) -> Response:
        data = self.ApplyInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        key = fields.pop("idempotency_key")
        fields["documents"] = [dict(d) for d in fields["documents"]]
        return governed_response(sender_id_apply(actor=self.actor(request), idempotency_key=key, **fields))


class QuotaApi(ServiceApiView):
    required_permissions = {"GET": "gateways.view_account"}

    @extend_schema(
        operation_id="quotas_get",
        summary="Balance, quota, rates, sendable estimate (sms_marketing.quotas.get)",
        responses=read_responses(description="Balance, the month's quota and use, rates, what is sendable."),
    )
    def get(self, request: Request) -> Response:
        return Response(quotas_get())


class ConfigApi(ServiceApiView):
    required_permissions = {
        "GET": "smsplatform.view_platformconfig",
        "PATCH": "smsplatform.change_platformconfig",
    }

    # Strict like every other write: a misspelt top-level field is refused, naming it, not dropped.
    class UpdateInput(StrictInput):
        changes = serializers.DictField(help_text="Settings to change, each given whole (see GET).")
        base_version_token = serializers.CharField(help_text="From GET; a stale token is refused.")
        idempotency_key = serializers.CharField(max_length=200)
        reason = serializers.CharField(required=False, allow_blank=True, default="")

    @extend_schema(
        operation_id="config_get",
        summary="Read the platform configuration (sms_marketing.config.get)",
        responses=read_responses(description="The configuration, its version and base_version_token."),
    )
    def get(self, request: Request) -> Response:
        return Response(platform_config_get())

    @extend_schema(
        operation_id="config_update",
        summary="Change named settings; may be held for approval (202)",
        request=UpdateInput,
        responses=governed_responses(409),
    )
    def patch(self, request: Request) -> Response:
        data = self.UpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        result = platform_config_update(actor=self.actor(request), **data.validated_data)
        return governed_response(result)
