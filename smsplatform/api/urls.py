from django.urls import include, path

from compliance.api.views import (
    ActionRequestStatusApi,
    ApprovalPolicyListApi,
    OwnerListApi,
)
from gateways.api.views import ConfigApi, GatewayListApi, QuotaApi, SenderIdListApi
from smsplatform.api.views import ApiIndexApi, ConfigVersionsApi, HealthApi

urlpatterns = [
    path("", ApiIndexApi.as_view(), name="index"),
    path("health/", HealthApi.as_view(), name="health"),
    path("config/", ConfigApi.as_view(), name="config"),
    path("config/versions/", ConfigVersionsApi.as_view(), name="config-versions"),
    path("approval-policies/", ApprovalPolicyListApi.as_view(), name="approval-policies"),
    path("owners/", OwnerListApi.as_view(), name="owners"),
    path(
        "action-requests/<int:action_request_id>/",
        ActionRequestStatusApi.as_view(),
        name="action-request",
    ),
    path("gateways/", GatewayListApi.as_view(), name="gateways"),
    path("sender-ids/", SenderIdListApi.as_view(), name="sender-ids"),
    path("quotas/", QuotaApi.as_view(), name="quotas"),
    path("", include("templates.api.urls")),
    path("", include("contacts.api.urls")),
    path("", include("campaigns.api.urls")),
    path("", include("campaigns.otp.api.urls")),
    path("", include("campaigns.automations.api.urls")),
    path("", include("reporting.api.urls")),
]
