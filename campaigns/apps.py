from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "campaigns"

    def ready(self) -> None:
        # Register the governed campaign actions (create, update, schedule, send, cancel, resend).
        from campaigns import services  # noqa: F401
