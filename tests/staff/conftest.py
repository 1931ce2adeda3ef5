"""The staff app's tests use the campaign tests' small world (tests/campaigns/conftest.py)."""

from tests.campaigns.conftest import (  # noqa: F401
    approver_user,
    crm,
    marketer,
    schedule_policy,
    send_policy,
    world,
)
