from django.urls import path

from reporting.api.views import InboxApi, InboxReadApi, PerformanceSnapshotsApi, ReviewNotificationsApi

urlpatterns = [
    path("reporting/snapshots/", PerformanceSnapshotsApi.as_view(), name="performance-snapshots"),
    path("reporting/notifications/", ReviewNotificationsApi.as_view(), name="review-notifications"),
    path("reporting/inbox/", InboxApi.as_view(), name="inbox"),
    path("reporting/inbox/read/", InboxReadApi.as_view(), name="inbox-read"),
]
