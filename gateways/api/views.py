"""REST views of the gateways app."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from gateways.quotas import quotas_get
from gateways.selectors import gateways_list, sender_ids_list
from gateways.services import sender_id_apply
from smsplatform.api.base import ServiceApiView, StrictInput
from smsplatform.api.schema import governed_responses, list_output, read_responses
from smsplatform.api.views import governed_response
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
