from django.apps import AppConfig


class ContactsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "contacts"

    def ready(self) -> None:
        from compliance.keywords import inbound_keyword_handler
        from contacts import services  # noqa: F401  (registers the governed contact actions)
        from gateways.delivery import INBOUND_HANDLERS, register_inbound_handler

        # ready() can run twice in some test setups: register the STOP handler once.
        if inbound_keyword_handler not in INBOUND_HANDLERS:
            register_inbound_handler(inbound_keyword_handler)
