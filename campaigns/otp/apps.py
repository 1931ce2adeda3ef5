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
