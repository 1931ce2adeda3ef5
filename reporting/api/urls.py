from django.urls import path

from reporting.api.views import (
    CampaignReportApi,
    ConversionAttributionApi,
    FlowReportApi,
    InboxApi,
    InboxReadApi,
    LinkClicksApi,
    PerformanceSnapshotsApi,
    ReviewNotificationsApi,
)

urlpatterns = [
    path("campaigns/<int:campaign_id>/report/", CampaignReportApi.as_view(), name="campaign-report"),
    path(
        "campaigns/<int:campaign_id>/attribution/",
        ConversionAttributionApi.as_view(),
        name="conversion-attribution",
    ),
    path("automations/<int:flow_id>/report/", FlowReportApi.as_view(), name="automation-report"),
    path("link-clicks/", LinkClicksApi.as_view(), name="link-clicks"),
    path("reporting/snapshots/", PerformanceSnapshotsApi.as_view(), name="performance-snapshots"),
    path("reporting/notifications/", ReviewNotificationsApi.as_view(), name="review-notifications"),
    path("reporting/inbox/", InboxApi.as_view(), name="inbox"),
    path("reporting/inbox/read/", InboxReadApi.as_view(), name="inbox-read"),
]
