"""The platform's roles, as Django groups with permissions (spine 2).

``roles_sync`` is idempotent: it runs after every migrate and from seed_demo,
and later issues extend ROLE_PERMISSIONS as their tools arrive.
"""

from __future__ import annotations

from enum import StrEnum

from django.apps import apps as global_apps
from django.contrib.auth.management import create_permissions
from django.contrib.auth.models import Group, Permission


class Role(StrEnum):
    MARKETING = "marketing"
    CRM = "crm"
    OPERATIONS = "operations"
    COMPLIANCE = "compliance"
    TECHNICAL = "technical"
    APPROVER = "approver"


ROLE_LABELS = {
    Role.MARKETING: ("Marketing", "市場推廣"),
    Role.CRM: ("CRM", "客戶關係"),
    Role.OPERATIONS: ("Operations", "營運"),
    Role.COMPLIANCE: ("Compliance", "合規"),
    Role.TECHNICAL: ("Technical", "技術"),
    Role.APPROVER: ("Approver", "審批"),
}

_READ_BASICS = [
    "smsplatform.view_platformconfig",
    "compliance.view_approvalpolicy",
    "compliance.view_actionrequest",
    "compliance.view_owners",
    "gateways.view_gateway",
    "gateways.view_senderid",
    "gateways.view_account",
]

# Message content (templates, copy fit preview, short links).
_CONTENT_MARKETING = [
    "sms_templates.view_template",
    "sms_templates.add_template",
    "sms_templates.fit_preview",
    "sms_templates.view_shortlink",
    "sms_templates.preview_shortlink",
    "sms_templates.add_shortlink",
]

ROLE_PERMISSIONS: dict[Role, list[str]] = {
    Role.MARKETING: [*_READ_BASICS, *_CONTENT_MARKETING],
    Role.CRM: [*_READ_BASICS, "compliance.view_full_phone"],
    Role.OPERATIONS: [
        *_READ_BASICS,
        "compliance.view_all_actionrequests",
        "smsplatform.view_auditlog",
    ],
    Role.COMPLIANCE: [
        *_READ_BASICS,
        "smsplatform.change_platformconfig",
        "compliance.add_approvalpolicy",
        "compliance.change_approvalpolicy",
        "compliance.view_all_actionrequests",
        "compliance.view_full_phone",
        "smsplatform.view_auditlog",
        *_CONTENT_MARKETING,
        "sms_templates.change_template",
    ],
    Role.TECHNICAL: [
        *_READ_BASICS,
        "smsplatform.change_platformconfig",
        "compliance.view_all_actionrequests",
        "smsplatform.view_auditlog",
        "smsplatform.view_apitoken",
        "smsplatform.add_apitoken",
        "smsplatform.change_apitoken",
    ],
    Role.APPROVER: [
        *_READ_BASICS,
        "compliance.approve_actionrequest",
        "compliance.view_all_actionrequests",
        "smsplatform.view_auditlog",
    ],
}

# Gateways: who may apply for sender IDs, run gateways, and fund the account.
ROLE_PERMISSIONS[Role.COMPLIANCE] += ["gateways.add_senderidapplication", "gateways.view_senderidapplication"]
ROLE_PERMISSIONS[Role.TECHNICAL] += [
    "gateways.add_senderidapplication",
    "gateways.view_senderidapplication",
    "gateways.add_gateway",
    "gateways.change_gateway",
    "gateways.add_gatewayrate",
    "gateways.change_gatewayrate",
    "gateways.send_test_sms",
]
ROLE_PERMISSIONS[Role.OPERATIONS] += ["gateways.change_account", "gateways.send_test_sms"]
ROLE_PERMISSIONS[Role.APPROVER] += ["gateways.view_senderidapplication"]
_DELIVERY_VIEW = [
    "gateways.view_outboundmessage",
    "gateways.view_deliveryreceipt",
    "gateways.view_inboundmessage",
    "gateways.view_quotareservation",
]
ROLE_PERMISSIONS[Role.OPERATIONS] += _DELIVERY_VIEW
ROLE_PERMISSIONS[Role.TECHNICAL] += _DELIVERY_VIEW
# The notification outbox (read-only in the admin): who was told what, and whether it went.
ROLE_PERMISSIONS[Role.OPERATIONS] += ["smsplatform.view_notification"]
ROLE_PERMISSIONS[Role.TECHNICAL] += ["smsplatform.view_notification"]

# What each capability in owners.list means, as the permission that grants it.
CAPABILITIES: dict[str, str] = {
    "approve": "compliance.approve_actionrequest",
    "change_config": "smsplatform.change_platformconfig",
    "manage_approval_policies": "compliance.change_approvalpolicy",
    "view_full_phone": "compliance.view_full_phone",
    "view_audit_log": "smsplatform.view_auditlog",
    "apply_sender_id": "gateways.add_senderidapplication",
    "send_test_sms": "gateways.send_test_sms",
}


def roles_with_permission(permission: str) -> list[str]:
    """The platform roles whose seeded permissions include ``permission`` (what roles_sync gives
    each role's group), in the Role order: the permission_denied hint names them."""
    return [role.value for role, perms in ROLE_PERMISSIONS.items() if permission in perms]


def _permission(dotted: str) -> Permission:
    app_label, codename = dotted.split(".", 1)
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)


def roles_sync(*, using: str = "default") -> dict[str, int]:
    """Create the groups and give each exactly its permissions. Safe to run again."""
    for app_config in global_apps.get_app_configs():
        # Permissions of apps migrated after this one may not exist yet.
        create_permissions(app_config, verbosity=0, using=using)
    counts = {}
    for role, perms in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.using(using).get_or_create(name=role.value)
        group.permissions.set([_permission(p) for p in perms])
        counts[role.value] = len(perms)
    return counts


# Contacts, consent, opt-outs, audiences, customer facts and segments (issue 4).
_CONTACTS_READ = ["contacts.view_contact", "compliance.view_optout", "contacts.view_audience", "contacts.view_segment"]
ROLE_PERMISSIONS[Role.MARKETING] += [*_CONTACTS_READ, "contacts.add_segment", "contacts.view_customerfact"]
ROLE_PERMISSIONS[Role.CRM] += [
    *_CONTACTS_READ,
    "contacts.add_contact",
    "contacts.change_contact",
    "contacts.view_consentevidence",
    "compliance.add_optout",
    "contacts.add_segment",
    "contacts.add_customerfact",
    "contacts.view_customerfact",
]
ROLE_PERMISSIONS[Role.COMPLIANCE] += [*_CONTACTS_READ, "contacts.view_consentevidence", "compliance.add_optout"]
ROLE_PERMISSIONS[Role.OPERATIONS] += ["contacts.view_contact", "compliance.view_optout", "compliance.add_optout"]
ROLE_PERMISSIONS[Role.TECHNICAL] += ["contacts.add_customerfact", "contacts.view_customerfact"]
ROLE_PERMISSIONS[Role.APPROVER] += _CONTACTS_READ

# Campaigns, sending, batches, delivery status and retries (issue 6).
_CAMPAIGN_READ = ["campaigns.view_campaign", "campaigns.view_sendbatch"]
ROLE_PERMISSIONS[Role.MARKETING] += [
    *_CAMPAIGN_READ,
    "campaigns.add_campaign",
    "campaigns.change_campaign",
    "campaigns.schedule_campaign",
    "campaigns.send_campaign",
    "campaigns.resend_messages",
]
# An approver may schedule and send, so their confirm=true is a path of its own (a schedule or send
# confirmed by a holder of confirm_campaign); everyone else who may schedule is held for an approver
# by the "unconfirmed" policies seed_demo adds.
ROLE_PERMISSIONS[Role.APPROVER] += [
    *_CAMPAIGN_READ,
    "campaigns.view_all_campaigns",
    "campaigns.confirm_campaign",
    "campaigns.schedule_campaign",
    "campaigns.send_campaign",
]
ROLE_PERMISSIONS[Role.COMPLIANCE] += [*_CAMPAIGN_READ, "campaigns.view_all_campaigns"]
ROLE_PERMISSIONS[Role.OPERATIONS] += [
    *_CAMPAIGN_READ,
    # Scheduling re-counts the campaign's segment (its audiences) live: without these, operations
    # could hold the schedule permission and still never schedule.
    "contacts.view_audience",
    "contacts.view_segment",
    "campaigns.view_all_campaigns",
    "campaigns.schedule_campaign",
    "campaigns.resend_messages",
]
CAPABILITIES["confirm_live_send"] = "campaigns.confirm_campaign"

# OTP abuse defence (issue 16): operations and technical watch and lift SMS-pumping blocks.
_OTP_ABUSE = ["otp.view_pumpingblock", "otp.lift_pumpingblock"]
ROLE_PERMISSIONS[Role.OPERATIONS] += _OTP_ABUSE
ROLE_PERMISSIONS[Role.TECHNICAL] += _OTP_ABUSE
# OTP (issue 16): compliance requests OTP templates (an approver always approves them), technical
# sends test codes and integrates the business backend (send and check), operations watches.
_OTP_READ = ["otp.view_otptemplate", "otp.view_verification"]
ROLE_PERMISSIONS[Role.COMPLIANCE] += [*_OTP_READ, "otp.add_otptemplate", "otp.change_otptemplate"]
ROLE_PERMISSIONS[Role.TECHNICAL] += [*_OTP_READ, "otp.send_verification", "otp.check_verification"]
ROLE_PERMISSIONS[Role.OPERATIONS] += _OTP_READ
ROLE_PERMISSIONS[Role.APPROVER] += ["otp.view_otptemplate"]
# Reports (issue 18): campaign reports, link clicks and attribution; person-level clicks for CRM.
_REPORTS = ["reporting.view_campaign_report"]
for _role in (Role.MARKETING, Role.CRM, Role.OPERATIONS, Role.COMPLIANCE, Role.APPROVER):
    ROLE_PERMISSIONS[_role] += _REPORTS
ROLE_PERMISSIONS[Role.CRM] += [*_CAMPAIGN_READ, "reporting.view_person_clicks"]
# Automations: flows (issue 17).
_FLOW_READ = ["automations.view_flow", "automations.view_enrolment"]
ROLE_PERMISSIONS[Role.MARKETING] += [*_FLOW_READ, "automations.add_flow", "automations.change_flow"]
ROLE_PERMISSIONS[Role.CRM] += _FLOW_READ
ROLE_PERMISSIONS[Role.COMPLIANCE] += _FLOW_READ
ROLE_PERMISSIONS[Role.OPERATIONS] += [*_FLOW_READ, "automations.change_flow"]
ROLE_PERMISSIONS[Role.APPROVER] += [*_FLOW_READ, "automations.change_flow", "automations.confirm_flow"]
CAPABILITIES["confirm_flow_activation"] = "automations.confirm_flow"

# Automations' events intake: technical staff run the event sources (their secrets included);
# CRM and marketing read the events (phones masked).
ROLE_PERMISSIONS[Role.TECHNICAL] += [
    "automations.add_eventsource",
    "automations.change_eventsource",
    "automations.view_eventsource",
    "automations.view_event_source_secret",
    "automations.view_commerceevent",
]
ROLE_PERMISSIONS[Role.CRM] += ["automations.view_commerceevent"]
ROLE_PERMISSIONS[Role.MARKETING] += ["automations.view_commerceevent"]
# Reporting: performance snapshots and review notifications (issue 18). Who may record a snapshot
# (figures from a portal, an ad platform, a finance export) and who may notify the people
# responsible; every staff user reads their own inbox.
_SNAPSHOT_VIEW = ["reporting.view_performancesnapshot"]
ROLE_PERMISSIONS[Role.MARKETING] += [
    *_SNAPSHOT_VIEW,
    "reporting.add_performancesnapshot",
    "reporting.add_reviewnotification",
]
ROLE_PERMISSIONS[Role.OPERATIONS] += [
    *_SNAPSHOT_VIEW,
    "reporting.add_performancesnapshot",
    "reporting.add_reviewnotification",
    "reporting.view_reviewnotification",
]
ROLE_PERMISSIONS[Role.COMPLIANCE] += [
    *_SNAPSHOT_VIEW,
    "reporting.add_reviewnotification",
    "reporting.view_reviewnotification",
]
ROLE_PERMISSIONS[Role.APPROVER] += [*_SNAPSHOT_VIEW, "reporting.add_reviewnotification"]
ROLE_PERMISSIONS[Role.TECHNICAL] += [*_SNAPSHOT_VIEW]
ROLE_PERMISSIONS[Role.CRM] += [*_SNAPSHOT_VIEW]
