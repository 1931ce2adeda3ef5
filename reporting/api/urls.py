from django.urls import path

from reporting.api.views import CampaignReportApi, ConversionAttributionApi, LinkClicksApi

urlpatterns = [
    path("campaigns/<int:campaign_id>/report/", CampaignReportApi.as_view(), name="campaign-report"),
    path(
        "campaigns/<int:campaign_id>/attribution/",
        ConversionAttributionApi.as_view(),
        name="conversion-attribution",
    ),
    path("link-clicks/", LinkClicksApi.as_view(), name="link-clicks"),
]
