from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _sync_roles(sender: AppConfig, using: str = "default", **kwargs: object) -> None:
    from compliance.roles import roles_sync

    roles_sync(using=using)


class ComplianceConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "compliance"
    verbose_name = "Compliance and approvals"

    def ready(self) -> None:
        post_migrate.connect(_sync_roles, sender=self, dispatch_uid="compliance.roles_sync")
        from compliance import governance  # noqa: F401  (registers governed actions)
        from compliance.roles import roles_with_permission
        from smsplatform.kernel import errors

        errors.permission_roles = roles_with_permission  # the permission_denied hint names these roles

        from compliance.metrics import approvals_state
        from smsplatform.operations.metrics import metrics_source_register

        metrics_source_register("approvals", approvals_state)
