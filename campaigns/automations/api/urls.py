from django.urls import path

from campaigns.automations.api.views import EventBatchApi

urlpatterns = [
    path("events/batch", EventBatchApi.as_view(), name="events-batch"),
]
