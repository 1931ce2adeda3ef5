from django.urls import path

from campaigns.automations.staff import views

urlpatterns = [
    path("", views.flow_list, name="list"),
    path("<int:flow_id>/", views.flow_detail, name="detail"),
    path("<int:flow_id>/dry-run/", views.dry_run, name="dry-run"),
    path("<int:flow_id>/state/", views.flow_state, name="state"),
]
