from django.urls import path

from campaigns.otp.staff import views

urlpatterns = [
    path("", views.template_list, name="list"),
    path("new/", views.edit, name="new"),
    path("<int:template_id>/", views.edit, name="edit"),
    path("verifications/", views.verifications, name="verifications"),
]
