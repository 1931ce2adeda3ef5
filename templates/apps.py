from django.apps import AppConfig


class TemplatesConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "templates"
    label = "sms_templates"
    verbose_name = "Message content"

    def ready(self) -> None:
        # The templates pages of the staff app (/app/templates/).
        from templates.staff.nav import register as staff_register

        staff_register()
