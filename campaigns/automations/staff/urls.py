from django.urls import path

from campaigns.automations.staff import editor, views

urlpatterns = [
    path("", views.flow_list, name="list"),
    path("new/", editor.flow_new, name="new"),
    path("<int:flow_id>/", views.flow_detail, name="detail"),
    path("<int:flow_id>/edit/", editor.flow_edit, name="edit"),
    path("<int:flow_id>/dry-run/", views.dry_run, name="dry-run"),
    path("<int:flow_id>/state/", views.flow_state, name="state"),
]
