from django.urls import path

from campaigns.otp.api import views

urlpatterns = [
    path("otp/templates/", views.OtpTemplateListApi.as_view(), name="otp-templates"),
    path("otp/verifications/", views.VerificationSendApi.as_view(), name="otp-verifications"),
    path("otp/verifications/<str:verification_id>/", views.VerificationDetailApi.as_view(), name="otp-verification"),
    path(
        "otp/verifications/<str:verification_id>/check",
        views.VerificationCheckApi.as_view(),
        name="otp-verification-check",
    ),
    path(
        "otp/verifications/<str:verification_id>/cancel",
        views.VerificationCancelApi.as_view(),
        name="otp-verification-cancel",
    ),
]
