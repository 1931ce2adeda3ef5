"""REST views of the reports (issue 18): thin, the selectors hold every rule."""

from __future__ import annotations

from datetime import date
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from campaigns.access import campaign_access
from reporting.inbox import inbox_list
from reporting.models import NotificationKind, SnapshotSource
from reporting.notifications import PERMISSION as NOTIFY_PERMISSION
from reporting.notifications import inbox_mark_read, review_notification_send
from reporting.selectors import (
    VIEW_REPORT,
    campaign_report_get,
    conversion_attribution_get,
    flow_report_get,
    link_clicks_list,
)
from reporting.snapshot_selectors import snapshots_for
from reporting.snapshots import PERMISSION as SNAPSHOT_PERMISSION
from reporting.snapshots import performance_snapshot_record
from smsplatform.api.base import QUERY_PASSTHROUGH, ServiceApiView, StrictInput
from smsplatform.api.schema import governed_responses, list_output, read_responses
from smsplatform.api.views import governed_response
from smsplatform.kernel.errors import ApplicationError, ErrorCode


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


class FlowReportApi(ServiceApiView):
    """Delivery, failures by reason, opt-outs, cost, gateway x country split and trend of an automation
    flow (sms_marketing.campaign_reports.get with flow_id). The flow is the path's: a campaign_id
    in the query is refused, naming the field."""

    required_permissions = {"GET": VIEW_REPORT}

    @extend_schema(
        operation_id="flow_reports_get",
        summary="An automation flow's report from the aggregates (sms_marketing.campaign_reports.get, flow_id)",
        parameters=[CampaignReportQuery],
        responses=read_responses(ReportOutput, 404),
    )
    def get(self, request: Request, flow_id: int) -> Response:
        args = _query(CampaignReportQuery, request)
        return Response(flow_report_get(actor=self.actor(request), flow_id=flow_id, **args))


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


SNAPSHOT_VIEW = "reporting.view_performancesnapshot"


def _query_date(request: Request, name: str) -> date | None:
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ApplicationError(ErrorCode.VALIDATION_ERROR, f"{name} must be a date (YYYY-MM-DD).", field=name) from None


class PerformanceSnapshotsApi(ServiceApiView):
    required_permissions = {"GET": SNAPSHOT_VIEW, "POST": SNAPSHOT_PERMISSION}

    @extend_schema_serializer(component_name="PerformanceSnapshotRecordInput")
    class Input(StrictInput):
        # Nested objects are validated by the service (the same rules and codes as MCP and admin).
        subject = serializers.DictField(help_text="campaign_id or flow_id")
        source_kind = serializers.ChoiceField(choices=SnapshotSource.values)
        source_name = serializers.CharField(max_length=100)
        date_from = serializers.DateField()
        date_to = serializers.DateField()
        gateway = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
        attribution = serializers.DictField(required=False, default=dict)
        metrics = serializers.DictField()
        currency = serializers.CharField(max_length=3, required=False, default="HKD")
        gateway_performance = serializers.DictField(required=False, default=dict)
        evidence = serializers.DictField(help_text="file_base64 + file_name, or url + sha256")
        note = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")
        base_version_token = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
        idempotency_key = serializers.CharField(max_length=200)
        reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=1000)

    @extend_schema(
        operation_id="performance_snapshots_list",
        summary="Current performance snapshots of a campaign (shown beside the computed figures)",
        parameters=[
            OpenApiParameter("campaign_id", OpenApiTypes.INT, required=True),
            OpenApiParameter("date_from", OpenApiTypes.DATE),
            OpenApiParameter("date_to", OpenApiTypes.DATE),
        ],
        responses=read_responses(list_output("PerformanceSnapshotListOutput", "snapshots"), 404),
    )
    def get(self, request: Request) -> Response:
        raw = request.query_params.get("campaign_id", "")
        if not raw.isdigit():
            raise ApplicationError(
                ErrorCode.VALIDATION_ERROR, "campaign_id must be a positive integer.", field="campaign_id"
            )
        campaign = campaign_access(actor=self.actor(request), campaign_id=int(raw))
        rows = snapshots_for(
            campaign_id=campaign.pk,
            date_from=_query_date(request, "date_from"),
            date_to=_query_date(request, "date_to"),
        )
        return Response({"snapshots": rows, "count": len(rows)})

    @extend_schema(
        operation_id="performance_snapshot_record",
        summary="Record a performance snapshot (sms_marketing.performance_snapshot.record); an overwrite is held (202)",
        request=Input,
        responses=governed_responses(404, 409),
    )
    def post(self, request: Request) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        key, reason = values.pop("idempotency_key"), values.pop("reason")
        values["date_from"], values["date_to"] = values["date_from"].isoformat(), values["date_to"].isoformat()
        values["base_version_token"] = values["base_version_token"] or None
        return governed_response(
            performance_snapshot_record(actor=self.actor(request), data=values, idempotency_key=key, reason=reason)
        )


class ReviewNotificationsApi(ServiceApiView):
    required_permissions = {"POST": NOTIFY_PERMISSION}

    @extend_schema_serializer(component_name="ReviewNotificationSendInput")
    class Input(StrictInput):
        kind = serializers.ChoiceField(choices=NotificationKind.values)
        subject = serializers.DictField(help_text="campaign_id, flow_id or action_request_id")
        title = serializers.CharField(max_length=200)
        body = serializers.CharField(max_length=4000)
        recipients = serializers.ListField(
            child=serializers.CharField(max_length=254), required=False, default=list, max_length=200
        )
        idempotency_key = serializers.CharField(max_length=200)
        reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=1000)

    @extend_schema(
        operation_id="review_notification_send",
        summary="Notify the people responsible (sms_marketing.review_notification.send); external/bulk held (202)",
        request=Input,
        responses=governed_responses(404),
    )
    def post(self, request: Request) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        return governed_response(review_notification_send(actor=self.actor(request), **data.validated_data))


class InboxApi(ServiceApiView):
    """The caller's own in-app notifications (any authenticated user; nobody sees another's)."""

    @extend_schema(
        operation_id="inbox_list",
        summary="My notifications (unread first)",
        parameters=[OpenApiParameter("unread", OpenApiTypes.BOOL)],
        responses=read_responses(list_output("InboxListOutput", "items")),
    )
    def get(self, request: Request) -> Response:
        unread = request.query_params.get("unread") in ("1", "true", "yes")
        items = inbox_list(actor=self.actor(request), unread_only=unread)
        return Response({"items": items, "count": len(items)})


class InboxReadApi(ServiceApiView):
    @extend_schema_serializer(component_name="InboxMarkReadInput")
    class Input(StrictInput):
        item_ids = serializers.ListField(child=serializers.IntegerField(min_value=1), max_length=500)

    @extend_schema(
        operation_id="inbox_mark_read",
        summary="Mark my notifications read",
        request=Input,
        responses=read_responses(OpenApiTypes.OBJECT, description="{marked: n}"),
    )
    def post(self, request: Request) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(
            {"marked": inbox_mark_read(actor=self.actor(request), item_ids=data.validated_data["item_ids"])}
        )
