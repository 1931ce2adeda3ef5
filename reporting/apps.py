from django.apps import AppConfig


class ReportingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "reporting"

    def ready(self) -> None:
        # Register the governed actions (snapshot overwrite, notification send), so an approval
        # can execute them in any process.
        from reporting import notifications, snapshots  # noqa: F401
