from django.urls import path

from campaigns.staff import compose, pages

urlpatterns = [
    path("", pages.campaign_list, name="list"),
    path("new/", compose.compose, name="compose"),
    path("new/segment/", compose.segment_preview_part, name="compose-segment"),
    path("new/fit/", compose.fit_part, name="compose-fit"),
    path("new/link/preview/", compose.link_preview_part, name="compose-link-preview"),
    path("new/link/create/", compose.link_create_part, name="compose-link-create"),
    path("new/schedule/", compose.schedule_part, name="compose-schedule"),
    path("new/cost/", compose.cost_part, name="compose-cost"),
    path("<int:campaign_id>/", pages.campaign_detail, name="detail"),
    path("<int:campaign_id>/progress/", pages.progress_part, name="progress"),
    path("<int:campaign_id>/batches/", pages.batches_part, name="batches"),
    path("<int:campaign_id>/retry/", pages.retry_preview_page, name="retry"),
]
