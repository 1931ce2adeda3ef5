from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _ensure_periodic_tasks(sender: AppConfig, using: str = "default", **kwargs: object) -> None:
    from smsplatform.schedules import periodic_tasks_ensure

    periodic_tasks_ensure(using=using)


class SmsPlatformConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "smsplatform"
    verbose_name = "Platform"

    def ready(self) -> None:
        from smsplatform import security  # noqa: F401 (registers the deployment checks)

        post_migrate.connect(
            _ensure_periodic_tasks,
            sender=self,
            dispatch_uid="smsplatform.periodic_tasks",
        )
