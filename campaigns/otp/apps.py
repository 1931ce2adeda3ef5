from django.apps import AppConfig


class OtpConfig(AppConfig):
    """One-time codes: OTP templates, verifications, rate limits and pumping defence (a Django app
    nested in campaigns: it sends on purpose, above everything it uses)."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "campaigns.otp"
    label = "otp"
    verbose_name = "OTP and verification"

    def ready(self) -> None:
        # Register the governed actions otp_template.save and otp.send.
        from campaigns.otp import services  # noqa: F401
        from campaigns.otp.errors import OtpErrorCode
        from campaigns.otp.metrics import otp_abuse_state
        from smsplatform.kernel.errors import http_status_register
        from smsplatform.operations.metrics import metrics_source_register

        http_status_register(OtpErrorCode.RATE_LIMITED, 429)  # with Retry-After (smsplatform.api.errors)
        metrics_source_register("otp_abuse", otp_abuse_state)

        # The OTP pages of the staff app (/app/otp/).
        from campaigns.otp.staff.nav import register as staff_register

        staff_register()
