from __future__ import annotations

from typing import Any

import pytest

from compliance.roles import Role
from tests.support.factories import UserFactory


@pytest.fixture
def marketer(db: Any) -> Any:
    return UserFactory.create(roles=[Role.MARKETING])


@pytest.fixture
def crm(db: Any) -> Any:
    return UserFactory.create(roles=[Role.CRM])


@pytest.fixture
def approver(db: Any) -> Any:
    return UserFactory.create(roles=[Role.APPROVER])
