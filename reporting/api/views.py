"""REST views of the reports (issue 18): thin, the selectors hold every rule."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from reporting.selectors import VIEW_REPORT, campaign_report_get, conversion_attribution_get, link_clicks_list
from smsplatform.api.base import QUERY_PASSTHROUGH, ServiceApiView, StrictInput
from smsplatform.api.schema import read_responses


def _query(serializer: type[StrictInput], request: Request) -> dict[str, Any]:
    data = {k: (request.query_params.getlist(k) if k == "gateways" else v) for k, v in request.query_params.items()}
    checked = serializer(data=data)
    checked.is_valid(raise_exception=True)
    return dict(checked.validated_data)


class _Range(StrictInput):
    passthrough = QUERY_PASSTHROUGH
    date_from = serializers.CharField(max_length=40, required=False)
    date_to = serializers.CharField(max_length=40, required=False)


class CampaignReportQuery(_Range):
    gateways = serializers.ListField(child=serializers.CharField(max_length=64), required=False, max_length=20)
    granularity = serializers.ChoiceField(choices=["hour", "day"], required=False)


class LinkClicksQuery(_Range):
    campaign_id = serializers.IntegerField(min_value=1, required=False)
    link_id = serializers.IntegerField(min_value=1, required=False)
    granularity = serializers.ChoiceField(choices=["hour", "day"], required=False)
    person_level = serializers.BooleanField(required=False)
    limit = serializers.IntegerField(min_value=1, max_value=200, required=False)
    before_id = serializers.IntegerField(min_value=1, required=False)


class ReportOutput(serializers.Serializer):
    scope = serializers.DictField()
    attribution = serializers.DictField()
    data_latency = serializers.DictField()


class CampaignReportApi(ServiceApiView):
    """Delivery, failures by reason, clicks, opt-outs, cost, conversions, ROI and trend of a campaign."""

    required_permissions = {"GET": VIEW_REPORT}

    @extend_schema(
        operation_id="campaign_reports_get",
        summary="A campaign's report from the aggregates (sms_marketing.campaign_reports.get)",
        parameters=[CampaignReportQuery],
        responses=read_responses(ReportOutput, 404),
    )
    def get(self, request: Request, campaign_id: int) -> Response:
        args = _query(CampaignReportQuery, request)
        return Response(campaign_report_get(actor=self.actor(request), campaign_id=campaign_id, **args))


class LinkClicksApi(ServiceApiView):
    """Clicks per short link, aggregated; person-level rows with reporting.view_person_clicks, masked."""

    required_permissions = {"GET": VIEW_REPORT}

    @extend_schema(
        operation_id="link_clicks_list",
        summary="Short-link clicks, unique clicks, devices, UTM and conversions (sms_marketing.link_clicks.list)",
        parameters=[LinkClicksQuery],
        responses=read_responses(ReportOutput, 404),
    )
    def get(self, request: Request) -> Response:
        return Response(link_clicks_list(actor=self.actor(request), **_query(LinkClicksQuery, request)))


class ConversionAttributionApi(ServiceApiView):
    """Orders, bookings, payments, revenue net of refunds, ROI, paths, conflicts and limits."""

    required_permissions = {"GET": VIEW_REPORT}

    @extend_schema(
        operation_id="conversion_attribution_get",
        summary="Conversions attributed to a campaign, with the rules (sms_marketing.conversion_attribution.get)",
        parameters=[_Range],
        responses=read_responses(ReportOutput, 404),
    )
    def get(self, request: Request, campaign_id: int) -> Response:
        args = _query(_Range, request)
        return Response(conversion_attribution_get(actor=self.actor(request), campaign_id=campaign_id, **args))
