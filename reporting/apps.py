from django.apps import AppConfig


class ReportingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "reporting"

    def ready(self) -> None:
        # Register the governed actions (snapshot overwrite, notification send), so an approval
        # can execute them in any process.
        from compliance.models import ActionType
        from compliance.presenters import action_presenter_register
        from reporting import notifications, snapshots  # noqa: F401
        from reporting.presenters import snapshot_overwrite_presentation

        # What an overwrite changes, on its approval page (compliance cannot import upward).
        action_presenter_register([ActionType.SNAPSHOT_OVERWRITE], snapshot_overwrite_presentation)

        # The poor-ROI alert reads attributed revenue and cost from the report aggregates.
        from reporting.alerts import roi_source_register
        from reporting.selectors import campaign_roi_figures

        roi_source_register(campaign_roi_figures)

        # The reports and inbox pages of the staff app (/app/reports/, /app/inbox/).
        from reporting.staff.nav import register as staff_register

        staff_register()
