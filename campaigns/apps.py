from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "campaigns"

    def ready(self) -> None:
        # Register the governed campaign actions (create, update, schedule, send, cancel, resend).
        from campaigns import services  # noqa: F401

        # What a campaign request will do, on its approval page (compliance cannot import upward).
        from campaigns.presenters import CAMPAIGN_ACTIONS, campaign_request_presentation
        from compliance.presenters import action_presenter_register

        action_presenter_register(CAMPAIGN_ACTIONS, campaign_request_presentation)

        # The campaigns pages of the staff app (/app/campaigns/).
        from campaigns.staff.nav import register as staff_register

        staff_register()
