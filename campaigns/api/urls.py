from django.urls import path

from campaigns.api.views import (
    CampaignCancelScheduleApi,
    CampaignCostPreviewApi,
    CampaignDetailApi,
    CampaignListApi,
    CampaignScheduleApi,
    CampaignSendApi,
    DeliveryStatusApi,
    FailedMessagesResendApi,
    RetryPreviewApi,
    SendBatchListApi,
)

urlpatterns = [
    path("campaigns/", CampaignListApi.as_view(), name="campaigns"),
    path("campaigns/<int:campaign_id>/", CampaignDetailApi.as_view(), name="campaign"),
    path("campaigns/<int:campaign_id>/cost-preview/", CampaignCostPreviewApi.as_view(), name="campaign-cost-preview"),
    path("campaigns/<int:campaign_id>/schedule/", CampaignScheduleApi.as_view(), name="campaign-schedule"),
    path(
        "campaigns/<int:campaign_id>/cancel-schedule/",
        CampaignCancelScheduleApi.as_view(),
        name="campaign-cancel-schedule",
    ),
    path("campaigns/<int:campaign_id>/send/", CampaignSendApi.as_view(), name="campaign-send"),
    path("campaigns/<int:campaign_id>/batches/", SendBatchListApi.as_view(), name="campaign-batches"),
    path("campaigns/<int:campaign_id>/retry-preview/", RetryPreviewApi.as_view(), name="campaign-retry-preview"),
    path("delivery-status/", DeliveryStatusApi.as_view(), name="delivery-status"),
    path("failed-messages/resend/", FailedMessagesResendApi.as_view(), name="failed-messages-resend"),
]
