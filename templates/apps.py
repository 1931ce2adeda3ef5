from django.apps import AppConfig


class TemplatesConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "templates"
    label = "sms_templates"
    verbose_name = "Message content"

    def ready(self) -> None:
        from templates.retention import retention_kinds_register

        retention_kinds_register()

        from smsplatform.operations.metrics import metrics_source_register
        from templates.metrics import click_spool_state

        metrics_source_register("click_spool", click_spool_state)
        # The templates pages of the staff app (/app/templates/).
        from templates.staff.nav import register as staff_register

        staff_register()
