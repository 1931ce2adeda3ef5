"""Demo data: roles, one user per role with an API token, configuration, policies. Idempotent."""

from __future__ import annotations

import hashlib
import hmac
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction

from compliance.models import ActionType, ApprovalPolicy, Condition
from compliance.roles import Role, roles_sync
from smsplatform.config_service import platform_config_instance
from smsplatform.models import ApiToken
from smsplatform.schedules import periodic_tasks_ensure

DEMO_POLICIES: list[dict[str, Any]] = [
    {"action": ActionType.CONFIG_UPDATE, "condition": Condition.ALWAYS, "description": "Every settings change."},
    {"action": ActionType.SENDER_ID_APPLY, "condition": Condition.ALWAYS, "description": "SSRS applications."},
    {"action": ActionType.CAMPAIGN_SEND, "condition": Condition.ALWAYS, "description": "Every campaign send."},
    {
        "action": ActionType.CAMPAIGN_SCHEDULE,
        "condition": Condition.COST_OVER,
        "threshold_amount": Decimal("5000"),
        "description": "Schedules estimated above HKD 5,000.",
    },
    {
        # Whoever may schedule but cannot confirm (marketing, operations) is held for an approver;
        # an approver's own confirm=true schedules at once (below HKD 5,000).
        "action": ActionType.CAMPAIGN_SCHEDULE,
        "condition": Condition.UNCONFIRMED,
        "description": "Schedules not confirmed by an approver (confirm=true) wait for an approver.",
    },
    {
        # Only a change to approved or scheduled content is held (the update's overwrites_existing
        # fact); a draft is edited freely.
        "action": ActionType.CAMPAIGN_UPDATE,
        "condition": Condition.OVERWRITES_EXISTING,
        "description": "Changes to approved or scheduled campaigns go back through approval.",
    },
    {
        "action": ActionType.MESSAGES_RESEND,
        "condition": Condition.RECIPIENTS_OVER,
        "threshold_count": 1000,
        "description": "Resends to more than 1,000 numbers.",
    },
    {
        "action": ActionType.SEGMENT_CREATE,
        "condition": Condition.RECIPIENTS_OVER,
        "threshold_count": 50000,
        "description": "Segments of more than 50,000 sendable contacts.",
    },
    {
        "action": ActionType.CONTACTS_IMPORT,
        "condition": Condition.RECIPIENTS_OVER,
        "threshold_count": 10000,
        "description": "Imports of more than 10,000 rows.",
    },
    {
        "action": ActionType.OTP_SEND,
        "condition": Condition.RECIPIENTS_OVER,
        "threshold_count": 100,
        "description": "Bulk OTP sends (more than 100 numbers at once).",
    },
    {
        "action": ActionType.TEMPLATE_SAVE,
        "condition": Condition.SENSITIVE_CONTENT,
        "description": "Template saves that touch brand, OTP or unsubscribe wording.",
    },
    {
        "action": ActionType.SHORT_LINK_CREATE,
        "condition": Condition.SENSITIVE_CONTENT,
        "description": "Short links to payment or finance landing pages.",
    },
    {
        "action": ActionType.SNAPSHOT_OVERWRITE,
        "condition": Condition.OVERWRITES_EXISTING,
        "description": "Overwriting an existing performance result.",
    },
    {
        # External (an address of no platform user) or bulk (over alerts.bulk_recipients) review
        # notifications: the check marks them sensitive; internal ones go out at once.
        "action": ActionType.NOTIFICATION_SEND,
        "condition": Condition.SENSITIVE_CONTENT,
        "description": "Review notifications to outside addresses or to many people.",
    },
]


LEGACY_DEMO_POLICY_FIXES = [
    (
        ActionType.CAMPAIGN_UPDATE,
        Condition.ALWAYS,
        Condition.OVERWRITES_EXISTING,
        "Changes to approved or scheduled campaigns go back through approval.",
    ),
]


DEMO_RATES = {"HK": "0.3500", "MO": "0.4200", "SG": "0.4800", "GB": "0.3900", "US": "0.0900"}


def demo_key(username: str) -> str:
    """Deterministic per install (derived from SECRET_KEY), so re-running prints the same keys."""
    return hmac.new(settings.SECRET_KEY.encode(), f"demo-token:{username}".encode(), hashlib.sha256).hexdigest()


class Command(BaseCommand):
    help = "Create demo roles, users (one per role) with API tokens, the configuration and approval policies."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--password", default="demo-pass-123", help="Password for every demo user.")
        parser.add_argument("--quiet", action="store_true", help="Do not print tokens.")

    def handle(self, *args: Any, **options: Any) -> None:
        roles_sync()
        periodic_tasks_ensure()
        platform_config_instance()
        approver = Group.objects.get(name=Role.APPROVER)
        # Demo policies seeded by earlier versions whose condition contradicted their own text (the
        # update policy held every draft edit): corrected in place, so a rerun does not keep both.
        for action, wrong, right, description in LEGACY_DEMO_POLICY_FIXES:
            ApprovalPolicy.objects.filter(action=action, condition=wrong, description=description).update(
                condition=right
            )
        for spec in DEMO_POLICIES:
            ApprovalPolicy.objects.get_or_create(
                action=spec["action"],
                condition=spec["condition"],
                defaults={
                    **{k: v for k, v in spec.items() if k not in {"action", "condition"}},
                    "approver_role": approver,
                },
            )
        self._seed_gateways()
        User = get_user_model()
        rows = []
        users = [("admin", None), *[(f"demo_{role.value}", role) for role in Role]]
        for username, role in users:
            user, created = User.objects.get_or_create(
                username=username,
                defaults={
                    "is_staff": True,
                    "is_superuser": role is None,
                    "first_name": username.replace("_", " ").title(),
                },
            )
            if created:
                user.set_password(options["password"])
                user.save()
            if role is not None:
                user.groups.set([Group.objects.get(name=role.value)])
            key = demo_key(username)
            ApiToken.objects.get_or_create(
                key_hash=ApiToken.hash_key(key),
                defaults={"user": user, "name": f"{username}-demo", "prefix": key[:8]},
            )
            rows.append((username, str(role.value) if role else "superuser", key))
        self._seed_marketing()
        self._seed_otp_templates()
        self._seed_flows()
        if not options["quiet"]:
            self.stdout.write(f"Demo users (password {options['password']!r}) and API tokens:")
            for username, role_name, key in rows:
                self.stdout.write(f"  {username:<18} {role_name:<11} Bearer {key}")
            for line in self._quiet_hours_lines():
                self.stdout.write(line)

    def _quiet_hours_lines(self) -> list[str]:
        """The demo sends to HK: say when its quiet hours hold a send, so a night-time demo does not
        wait silently."""
        from campaigns.quiet_hours import quiet_hours_notices
        from smsplatform.config_service import platform_config_data

        rules = platform_config_data()["schedule"]["quiet_hours"].get("HK")
        if not rules:
            return []
        lines = [
            f"Quiet hours: HK {rules['start']}-{rules['end']} ({rules.get('time_zone') or 'Asia/Hong_Kong'}); "
            "messages due inside them wait for the window (schedule.quiet_hours in the configuration)."
        ]
        lines += [f"  Now: {notice['message']}" for notice in quiet_hours_notices(["HK"])]
        return lines

    def _seed_gateways(self) -> None:
        """The embedded simulator gateway (demo rates), a registered demo sender ID, a funded account."""
        from django.utils import timezone

        from gateways.models import Gateway, GatewayRate, Provider, SenderId, SenderIdKind, SenderIdStatus
        from gateways.quotas import account_instance, account_top_up

        simulator, _ = Gateway.objects.get_or_create(
            code="simulator",
            defaults={
                "name": "Simulator (demo rates)",
                "provider": Provider.SIMULATOR,
                "countries": sorted(DEMO_RATES),
                "max_rate_per_second": 500,
                "window_size": 50,
                "encodings": ["GSM-7", "UCS-2"],
                "priority": 100,
            },
        )
        for country, price in DEMO_RATES.items():
            GatewayRate.objects.get_or_create(
                gateway=simulator, country=country, defaults={"price_per_segment": Decimal(price), "currency": "HKD"}
            )
        SenderId.objects.get_or_create(
            value="#DEMOHK",
            defaults={
                "kind": SenderIdKind.SSRS,
                "brand": "Demo Shop",
                "status": SenderIdStatus.REGISTERED,
                "regions": ["HK"],
                "ssrs_registered_regions": ["HK"],
                "registered_at": timezone.now(),
                "restrictions": "Demo data: registered in this installation only.",
            },
        )
        SenderId.objects.get_or_create(
            value="DemoShop",
            defaults={
                "kind": SenderIdKind.ALPHANUMERIC,
                "brand": "Demo Shop",
                "status": SenderIdStatus.REGISTERED,
                "regions": ["HK", "MO", "SG", "GB"],
                "registered_at": timezone.now(),
            },
        )
        from gateways.platform_config import platform_config_update
        from smsplatform.config_service import platform_config_get
        from smsplatform.kernel.actor import Actor

        current = platform_config_get()
        if not current["config"]["default_gateway"]:
            platform_config_update(
                actor=Actor.system("seed_demo"),
                changes={"default_gateway": "simulator", "default_sender_id": "#DEMOHK"},
                base_version_token=current["base_version_token"],
                idempotency_key=f"seed-demo-defaults-v{current['version']}",
                reason="demo defaults",
            )
        account = account_instance()
        if account.balance == 0:
            # The key follows the account's state, so a rerun over the same empty account replays
            # instead of funding it twice.
            account_top_up(
                actor=Actor.system("seed_demo"),
                amount=Decimal("5000"),
                reason="demo funds",
                idempotency_key=f"seed-demo-top-up-{account.pk}-{account.updated_at:%Y%m%d%H%M%S%f}",
            )

    def _seed_marketing(self) -> None:
        """Demo contacts with consent (two opted out by STOP, two on the simulator's 'undelivered'
        prefix), an audience, a segment, a short link and a draft campaign, all labelled demo and
        made through the same services as real data. Skipped once the demo campaign exists."""
        from campaigns.models import Campaign
        from campaigns.services import campaign_create_draft
        from compliance.models import OptOut
        from contacts.models import Audience, AudienceMembership
        from contacts.optouts import opt_out_record
        from contacts.services import contacts_upsert, segment_create, segment_preview
        from smsplatform.kernel.actor import Actor, Channel
        from templates.services import short_link_create
        from templates.short_links.preview import short_link_preview

        if Campaign.objects.filter(name="Demo weekend sale").exists():
            return
        User = get_user_model()
        label = "seed_demo"
        crm = Actor(user=User.objects.get(username="demo_crm"), channel=Channel.SYSTEM, token_name=label)
        marketing = Actor(user=User.objects.get(username="demo_marketing"), channel=Channel.SYSTEM, token_name=label)
        audience, _ = Audience.objects.get_or_create(
            name="Demo members",
            defaults={"description": "Demo data", "source": "demo", "region": "HK", "purchase_behaviour": "demo"},
        )
        phones = [f"+8529{1000000 + i:07d}" for i in range(1, 39)] + ["+85259002001", "+85259002002"]
        for i, phone in enumerate(phones):
            result = contacts_upsert(
                actor=crm,
                idempotency_key=f"seed-demo-contact-{i:03d}",
                phone=phone,
                source="demo",
                language="en" if i % 3 == 0 else "zh-hant",
                tags=["demo", "vip" if i % 5 == 0 else "member"],
                consent={
                    "purpose": "marketing",
                    "channel": "web",
                    "wording": "Demo data: I agree to receive offers by SMS from Demo Shop. 我同意接收推廣短訊。",
                    "source": "demo sign-up form",
                    "obtained_at": "2026-01-05T10:00:00+08:00",
                    "proof_reference": f"demo-form-{i:03d}",
                },
            )
            AudienceMembership.objects.get_or_create(audience=audience, contact_id=result["result"]["contact_id"])
        for phone in phones[:2]:
            if OptOut.objects.filter(phone=phone, lifted_at__isnull=True).exists():
                continue
            with transaction.atomic():
                opt_out_record(
                    actor=Actor.system("seed_demo"), phone=phone, reason="stop", source="sms", message_text="STOP"
                )
        preview = segment_preview(actor=marketing, criteria={"audiences": [audience.pk]})
        segment = segment_create(
            actor=marketing,
            segment_preview_id=preview["segment_preview_id"],
            name="Demo members",
            idempotency_key=f"seed-demo-segment-{preview['segment_preview_id'][:8]}",
        )
        link_preview = short_link_preview(
            actor=marketing,
            url="https://shop.example.com/weekend",
            utm={"utm_source": "sms", "utm_medium": "sms", "utm_campaign": "demo-weekend"},
            per_recipient=True,
        )
        link = short_link_create(
            actor=marketing,
            short_link_preview_id=link_preview["short_link_preview_id"],
            idempotency_key=f"seed-demo-link-{link_preview['short_link_preview_id'][:8]}",
        )
        if segment["status"] != "executed" or link["status"] != "executed":
            return  # held for approval by a policy: the draft waits for an approver
        campaign_create_draft(
            actor=marketing,
            data={
                "name": "Demo weekend sale",
                "segment_id": segment["result"]["segment_id"],
                "text": "【Demo Shop】週末全場8折 Weekend sale 20% off {{link}} 回覆STOP退訂 Reply STOP to opt out",
                "brand": "Demo Shop",
                "short_link_id": link["result"]["short_link_id"],
                "sender_id": "#DEMOHK",
                "send_goal": "Demo: weekend visits",
                "budget": "100",
            },
            idempotency_key="seed-demo-campaign",
        )

    def _demo_actor(self, username: str) -> Any:
        from smsplatform.kernel.actor import Actor, Channel

        label = "seed_demo"
        return Actor(user=get_user_model().objects.get(username=username), channel=Channel.SYSTEM, token_name=label)

    def _approve(self, answer: dict[str, Any], reason: str) -> None:
        """A held demo request approved by the demo approver (another person), through the approval service."""
        from compliance.services import action_request_approve

        if answer.get("status") == "pending_approval":
            action_request_approve(
                actor=self._demo_actor("demo_approver"),
                action_request_id=int(answer["action_request_id"]),
                reason=reason,
            )

    def _seed_otp_templates(self) -> None:
        """Two OTP templates requested by the demo compliance user through otp_template.save (always held):
        the login code approved by the demo approver, the password reset left awaiting approval, so the
        approval queue has one to show. A template whose name exists is left as it is."""
        from campaigns.otp.models import OtpTemplate
        from campaigns.otp.services import otp_template_save

        compliance = self._demo_actor("demo_compliance")
        templates: list[tuple[dict[str, Any], bool]] = [
            (
                {
                    "name": "Demo login code",
                    "purpose": "login",
                    "body_en": "Your Demo Shop code is {code}. Valid for {minutes} minutes.",
                    "body_zh_hant": "你的Demo Shop驗證碼是{code}，{minutes}分鐘內有效。",
                    "allowed_countries": ["HK"],
                    "sender_id": "#DEMOHK",
                },
                True,
            ),
            (
                {
                    "name": "Demo password reset",
                    "purpose": "password_reset",
                    "body_en": "Demo Shop password reset code: {code}. Valid for {minutes} minutes.",
                    "body_zh_hant": "Demo Shop重設密碼驗證碼：{code}，{minutes}分鐘內有效。",
                    "allowed_countries": ["HK"],
                    "sender_id": "#DEMOHK",
                },
                False,
            ),
        ]
        for content, approve in templates:
            if OtpTemplate.objects.filter(name=content["name"]).exists():
                continue
            answer = otp_template_save(
                actor=compliance,
                idempotency_key=f"seed-demo-otp-{content['purpose']}",
                content=content,
                reason="demo OTP template",
            )
            if approve:
                self._approve(answer, "demo data")

    def _template_version(self, content: dict[str, Any]) -> int | None:
        """A demo message template saved by the demo marketer (templates.save), approved when a policy
        holds it; its current version's id (None while it waits for approval)."""
        from templates.models import Template, TemplateVersion
        from templates.services import template_save

        template = Template.objects.filter(name=content["name"]).first()
        if template is None:
            answer = template_save(
                actor=self._demo_actor("demo_marketing"),
                idempotency_key=f"seed-demo-template-{content['purpose']}",
                content=content,
                reason="demo flow template",
            )
            self._approve(answer, "demo data")
            template = Template.objects.filter(name=content["name"]).first()
        if template is None or not template.version:
            return None
        version = TemplateVersion.objects.filter(template=template, version=template.version).first()
        return version.pk if version else None

    def _seed_flows(self) -> None:
        """Two demo automation flows created by the demo marketer through automations' flow_create: an
        order-shipped notice (transactional), activated by the demo approver through update_state, and an
        abandoned-cart reminder (marketing) left as a draft to try the dry run and the activation on.
        A flow whose name exists is left as it is."""
        from campaigns.automations.flow_models import Flow, FlowState
        from campaigns.automations.flow_services import flow_create, flow_update_state
        from campaigns.automations.spec import flow_token

        shipped = self._template_version(
            {
                "name": "Demo order shipped",
                "purpose": "transactional",
                "language": "bilingual",
                "brand": "Demo Shop",
                "body": "【Demo Shop】訂單{{order}}已發貨。Your order {{order}} has shipped.",
                "fields": [{"name": "order", "type": "code", "max_length": 20, "example": "A-1001"}],
                "max_segments": 2,
            }
        )
        cart = self._template_version(
            {
                "name": "Demo cart reminder",
                "purpose": "marketing",
                "language": "bilingual",
                "brand": "Demo Shop",
                "body": "【Demo Shop】購物車仍有貨品 Your cart is waiting. 回覆STOP退訂 Reply STOP to opt out",
                "fields": [],
                "max_segments": 2,
            }
        )
        marketing = self._demo_actor("demo_marketing")
        flows: list[tuple[dict[str, Any], bool]] = [
            (
                {
                    "name": "Demo: order shipped notice",
                    "description": "Demo data: tells the customer the order has shipped.",
                    "purpose": "transactional",
                    "trigger_event_types": ["order_shipped"],
                    "steps": [{"kind": "send"}],
                    "template_version_id": shipped,
                    "variables": {"order": "event.order_ref"},
                    "sender_id": "#DEMOHK",
                    "gateway": "simulator",
                    "opt_out_exclusion": True,
                    "max_per_period": 3,
                    "period_hours": 24,
                    "once_per_order": True,
                    "monthly_budget": "500",
                },
                True,
            ),
            (
                {
                    "name": "Demo: abandoned cart reminder",
                    "description": "Demo data: one reminder an hour after a cart is left, unless an order follows.",
                    "purpose": "marketing",
                    "trigger_event_types": ["cart_abandoned"],
                    "steps": [{"kind": "wait", "minutes": 60}, {"kind": "send"}],
                    "exit_conditions": [{"event_type": "order_placed", "match": "contact"}],
                    "template_version_id": cart,
                    "variables": {},
                    "sender_id": "#DEMOHK",
                    "gateway": "simulator",
                    "opt_out_exclusion": True,
                    "max_per_period": 1,
                    "period_hours": 72,
                    "monthly_budget": "200",
                },
                False,
            ),
        ]
        for data, activate in flows:
            if Flow.objects.filter(name=data["name"]).exists():
                continue
            created = flow_create(
                actor=marketing,
                data=data,
                idempotency_key=f"seed-demo-flow-{data['trigger_event_types'][0]}",
                reason="demo flow",
            )
            flow = Flow.objects.get(pk=created["flow_id"])
            if activate and flow.template_version_id and flow.state == FlowState.DRAFT:
                flow_update_state(
                    actor=self._demo_actor("demo_approver"),
                    flow_id=flow.pk,
                    operation="activate",
                    base_version_token=flow_token(flow),
                    confirm=True,
                    idempotency_key=f"seed-demo-flow-activate-{flow.pk}",
                    reason="demo flow",
                )
