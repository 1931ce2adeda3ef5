from django.apps import AppConfig


class AutomationsConfig(AppConfig):
    """Triggered automations: commerce events intake, flows, enrolments and the beat scan (a
    Django app nested in campaigns)."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "campaigns.automations"
    label = "automations"
    verbose_name = "Automations"

    def ready(self) -> None:
        # Register the governed flow action (automation.update).
        from campaigns.automations import flow_services  # noqa: F401

        # The automations pages of the staff app (/app/automations/).
        from campaigns.automations.staff.nav import register as staff_register

        staff_register()

        # A transactional flow's events start the priority tick as soon as they are committed.
        from campaigns.automations.intake import events_ingested
        from campaigns.automations.tasks import on_events_ingested

        events_ingested.connect(on_events_ingested, dispatch_uid="automations.priority_tick")
