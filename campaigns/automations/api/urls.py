from django.urls import path

from campaigns.automations.api.flow_views import (
    EnrolmentListApi,
    FlowDetailApi,
    FlowDryRunApi,
    FlowListApi,
    FlowStateApi,
)
from campaigns.automations.api.views import EventBatchApi

urlpatterns = [
    path("events/batch", EventBatchApi.as_view(), name="events-batch"),
    path("automations/", FlowListApi.as_view(), name="automations"),
    path("automations/enrolments/", EnrolmentListApi.as_view(), name="automation-enrolments"),
    path("automations/<int:flow_id>/", FlowDetailApi.as_view(), name="automation"),
    path("automations/<int:flow_id>/state/", FlowStateApi.as_view(), name="automation-state"),
    path("automations/<int:flow_id>/dry-run/", FlowDryRunApi.as_view(), name="automation-dry-run"),
]
