"""The factories in tests/support/factories.py build rows the models accept as they stand."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import models

from compliance.models import ActionType
from compliance.roles import Role
from tests.support import factories

pytestmark = pytest.mark.django_db

FACTORIES = [
    factories.ApprovalPolicyFactory,
    factories.GatewayFactory,
    factories.GatewayRateFactory,
    factories.SenderIdFactory,
    factories.ContactFactory,
    factories.ConsentEvidenceFactory,
    factories.AudienceFactory,
    factories.AudienceMembershipFactory,
    factories.OptOutFactory,
    factories.SegmentFactory,
    factories.TemplateFactory,
    factories.TemplateVersionFactory,
    factories.CampaignFactory,
]

# What a factory cannot choose for the test.
REQUIRED: dict[Any, dict[str, Any]] = {factories.ApprovalPolicyFactory: {"action": ActionType.CAMPAIGN_SCHEDULE}}


@pytest.mark.parametrize("factory", FACTORIES, ids=lambda f: f.__name__)
def test_each_factory_builds_a_valid_row(roles: None, factory: Any) -> None:
    row: models.Model = factory.create(**REQUIRED.get(factory, {}))
    # Empty JSON lists and dicts are what the services store too (a form would call them blank).
    empty = [f.name for f in row._meta.concrete_fields if getattr(row, f.attname) in ([], {})]
    row.full_clean(exclude=empty, validate_unique=False)


def test_a_user_gets_its_roles(roles: None) -> None:
    user = factories.UserFactory.create(roles=[Role.MARKETING, Role.APPROVER])
    assert sorted(user.groups.values_list("name", flat=True)) == sorted([Role.MARKETING, Role.APPROVER])
    assert user.check_password(factories.PASSWORD) and user.is_staff


def test_a_template_comes_with_its_first_version(roles: None) -> None:
    template = factories.TemplateFactory.create()
    assert list(template.versions.values_list("version", "name")) == [(1, template.name)]
