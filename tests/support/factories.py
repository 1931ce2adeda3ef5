"""factory-boy factories: the world a test stands in, built as stored rows.

Call ``XFactory.create(...)`` (typed: it returns the model instance). A test builds its world with these and calls services only for the thing it tests, so that a
change to one service does not ripple through every other app's set-up. Roles come from
``roles_sync`` (the ``roles`` fixture): the factories look the groups up, they do not define them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from campaigns.models import Campaign, CampaignState
from compliance.models import ApprovalPolicy, Condition, OptOut, OptOutReason, SyncState
from compliance.roles import Role
from contacts.models import (
    Audience,
    AudienceMembership,
    ConsentEvidence,
    ConsentPurpose,
    Contact,
    Segment,
)
from gateways.models import Gateway, GatewayRate, Provider, SenderId, SenderIdKind, SenderIdStatus
from gateways.quotas import account_instance
from templates.models import Language, Purpose, Template, TemplateVersion, VersionApproval

PASSWORD = "test-pass-123"
# A segment preview's exclusion counts, none excluded.
NO_EXCLUSIONS = {
    "duplicate_phone": 0,
    "invalid": 0,
    "blocked": 0,
    "opted_out": 0,
    "no_consent": 0,
    "country_not_covered": 0,
    "frequency_capped": 0,
}


class UserFactory(factory.django.DjangoModelFactory[Any]):
    """A staff user; ``roles=[Role.MARKETING, ...]`` puts it in those role groups."""

    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n + 1}")
    is_staff = True
    is_superuser = False
    password = factory.django.Password(PASSWORD)

    @factory.post_generation
    def roles(user: Any, create: bool, names: Any, **kwargs: Any) -> None:
        if create and names:
            user.groups.set([Group.objects.get(name=name) for name in names])


class ApprovalPolicyFactory(factory.django.DjangoModelFactory[ApprovalPolicy]):
    """An approval policy; the approver role defaults to the approver group."""

    class Meta:
        model = ApprovalPolicy

    condition = Condition.ALWAYS
    approver_role = factory.LazyFunction(lambda: Group.objects.get(name=Role.APPROVER))


class GatewayFactory(factory.django.DjangoModelFactory[Gateway]):
    """A gateway (the simulator unless ``provider`` says otherwise)."""

    class Meta:
        model = Gateway
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"gw-{n + 1}")
    name = factory.LazyAttribute(lambda o: o.code)
    provider = Provider.SIMULATOR


class GatewayRateFactory(factory.django.DjangoModelFactory[GatewayRate]):
    class Meta:
        model = GatewayRate

    gateway = factory.SubFactory(GatewayFactory)
    country = "HK"
    price_per_segment = Decimal("0.30")


class SenderIdFactory(factory.django.DjangoModelFactory[SenderId]):
    """A registered sender ID for Hong Kong; a ``#`` value is an SSRS one registered there."""

    class Meta:
        model = SenderId
        django_get_or_create = ("value",)

    value = factory.Sequence(lambda n: f"#SHOP{n + 1}")
    kind = factory.LazyAttribute(lambda o: SenderIdKind.SSRS if o.value.startswith("#") else SenderIdKind.ALPHANUMERIC)
    brand = "Shop"
    status = SenderIdStatus.REGISTERED
    regions = factory.LazyFunction(lambda: ["HK"])
    ssrs_registered_regions = factory.LazyAttribute(lambda o: ["HK"] if o.value.startswith("#") else [])


def account_fund(*, balance: Decimal, monthly_quota_segments: int) -> None:
    """The account (a singleton row) with this balance and quota."""
    account = account_instance()
    account.balance, account.monthly_quota_segments = balance, monthly_quota_segments
    account.save()


class ContactFactory(factory.django.DjangoModelFactory[Contact]):
    """A Hong Kong contact as the CRM sync stores it (E.164 phone, country from it)."""

    class Meta:
        model = Contact

    phone = factory.Sequence(lambda n: f"+8529{n + 1:07d}")
    country = "HK"
    source = "crm"
    tags = factory.LazyFunction(list)
    created_by = factory.SubFactory(UserFactory)


class ConsentEvidenceFactory(factory.django.DjangoModelFactory[ConsentEvidence]):
    """Marketing consent from a web form, with its wording and proof (as tests.support.contacts.consent)."""

    class Meta:
        model = ConsentEvidence

    contact = factory.SubFactory(ContactFactory)
    purpose = ConsentPurpose.MARKETING
    wording = "I agree to receive offers by SMS from Shop HK. 我同意接收推廣短訊。"
    source = "web_form"
    obtained_at = datetime(2026, 1, 5, 2, 0, tzinfo=UTC)
    proof_reference = "form-submission-991"
    recorded_by = factory.LazyAttribute(lambda o: o.contact.created_by)
    actor_channel = "api"
    actor_token_name = "test"


class AudienceFactory(factory.django.DjangoModelFactory[Audience]):
    class Meta:
        model = Audience

    name = factory.Sequence(lambda n: f"Audience {n + 1}")
    source = "crm"
    region = "HK"


class AudienceMembershipFactory(factory.django.DjangoModelFactory[AudienceMembership]):
    class Meta:
        model = AudienceMembership

    audience = factory.SubFactory(AudienceFactory)
    contact = factory.SubFactory(ContactFactory)


class OptOutFactory(factory.django.DjangoModelFactory[OptOut]):
    """A STOP received by SMS for a phone (and its contact, if given)."""

    class Meta:
        model = OptOut

    phone = factory.LazyAttribute(lambda o: o.contact.phone if o.contact else "+85291999999")
    contact = None
    reason = OptOutReason.STOP
    source = "sms"
    actor_channel = "system"
    actor_token_name = "test"
    sync_state = SyncState.NOT_APPLICABLE


class SegmentFactory(factory.django.DjangoModelFactory[Segment]):
    """A segment as segments.create stores it: ``audiences`` (ids) become its criteria; the counts,
    exclusions and cost are what its preview showed (give them)."""

    class Meta:
        model = Segment

    class Params:
        audiences: tuple[int, ...] = ()

    name = factory.Sequence(lambda n: f"Segment {n + 1}")
    criteria = factory.LazyAttribute(
        lambda o: {"criteria": {"audiences": list(o.audiences)}, "audience_ids": list(o.audiences)}
    )
    preview_id = factory.LazyFunction(uuid.uuid4)
    matched_count = 0
    sendable_count = 0
    exclusions = factory.LazyFunction(lambda: dict(NO_EXCLUSIONS))
    estimated_cost = factory.LazyFunction(dict)
    created_by = factory.SubFactory(UserFactory)


class TemplateFactory(factory.django.DjangoModelFactory[Template]):
    """A marketing template at version 1, with its version row (as template_save stores a new one)."""

    class Meta:
        model = Template
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Template {n + 1}")
    purpose = Purpose.MARKETING
    language = Language.BILINGUAL
    version = 1
    created_by = factory.SubFactory(UserFactory)
    first_version = factory.RelatedFactory(
        "tests.support.factories.TemplateVersionFactory",
        factory_related_name="template",
        version=1,
    )


class TemplateVersionFactory(factory.django.DjangoModelFactory[TemplateVersion]):
    """One saved state of a template (its name, purpose and language copied from the template)."""

    class Meta:
        model = TemplateVersion

    template = factory.SubFactory(TemplateFactory, first_version=None)
    version = factory.LazyAttribute(lambda o: o.template.version)
    name = factory.LazyAttribute(lambda o: o.template.name)
    purpose = factory.LazyAttribute(lambda o: o.template.purpose)
    language = factory.LazyAttribute(lambda o: o.template.language)
    body = "【ShopHK】春季優惠全場8折 回覆STOP退訂 Reply STOP to opt out"
    brand = "ShopHK"
    max_segments = 3
    approval_status = VersionApproval.NOT_REQUIRED
    created_by = factory.LazyAttribute(lambda o: o.template.created_by)


class CampaignFactory(factory.django.DjangoModelFactory[Campaign]):
    """A draft campaign with free copy to a segment, owned by its creator. Counts and cost (the
    ``estimate``, ``body_preview``, ``encoding``) are what the draft services compute: give them
    when a test reads them."""

    class Meta:
        model = Campaign

    name = factory.Sequence(lambda n: f"Campaign {n + 1}")
    state = CampaignState.DRAFT
    segment = factory.SubFactory(SegmentFactory)
    text = "【ShopHK】春季優惠全場8折 回覆STOP退訂 Reply STOP to opt out"
    brand = "ShopHK"
    sender_id = "#SHOPHK"
    send_goal = "Spring sale visits"
    owner = factory.SubFactory(UserFactory)
    created_by = factory.LazyAttribute(lambda o: o.owner)
