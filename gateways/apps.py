from django.apps import AppConfig


class GatewaysConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "gateways"
    verbose_name = "Gateways, sender IDs and quotas"

    def ready(self) -> None:
        from gateways import platform_config, services  # noqa: F401  (register sender_id.apply and config.update)
