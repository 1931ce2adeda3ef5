from django.urls import path

from reporting.staff import views

urlpatterns = [
    path("", views.report_list, name="list"),
    path("<int:campaign_id>/", views.report, name="campaign"),
    path("<int:campaign_id>/attribution/", views.attribution, name="attribution"),
]
