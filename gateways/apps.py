from django.apps import AppConfig


class GatewaysConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "gateways"
    verbose_name = "Gateways, sender IDs and quotas"

    def ready(self) -> None:
        from gateways import platform_config, services  # noqa: F401  (register sender_id.apply and config.update)
        from gateways.health import binds_check, receipt_lag_check
        from smsplatform.operations.health import health_check_register

        health_check_register("gateway_binds", binds_check)
        health_check_register("receipt_lag", receipt_lag_check)

        from gateways.retention import retention_kinds_register

        retention_kinds_register()

        from gateways.metrics import gateways_state
        from smsplatform.operations.metrics import metrics_source_register

        metrics_source_register("gateways", gateways_state)
