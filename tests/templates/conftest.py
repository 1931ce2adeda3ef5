"""Fixtures for the templates app: users, policies, the link cache and the click path.
Template content, short links and configuration helpers are in tests/support/templates.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from compliance.models import ActionType, ApprovalPolicy
from compliance.roles import Role
from templates.short_links.cache import cache_clear
from tests.support.templates import policy


@pytest.fixture(autouse=True)
def _fresh_link_cache() -> Iterator[None]:
    cache_clear()
    yield
    cache_clear()


@pytest.fixture(autouse=True)
def _clicks_written_in_the_request(settings: Any, tmp_path: Any) -> None:
    """Clicks take the INSERT path so that a test sees them at once; the spool tests switch
    it on themselves (and never write to the repository's var/)."""
    settings.SMS_CLICK_BATCH_SECONDS = 0
    settings.SMS_CLICK_SPOOL_DIR = str(tmp_path / "clicks")


@pytest.fixture
def compliance(make_user: Callable[..., Any]) -> Any:
    return make_user(Role.COMPLIANCE, username="compliance1")


@pytest.fixture
def nobody(make_user: Callable[..., Any]) -> Any:
    return make_user(username="nobody")


@pytest.fixture
def template_policy(roles: None) -> ApprovalPolicy:
    return policy(ActionType.TEMPLATE_SAVE)


@pytest.fixture
def link_policy(roles: None) -> ApprovalPolicy:
    return policy(ActionType.SHORT_LINK_CREATE)
