"""Shared fixtures: users per role, actors, API clients with bearer tokens, policies."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from compliance.models import ActionType, ApprovalPolicy, Condition
from compliance.roles import Role, roles_sync
from smsplatform.config_service import platform_config_get
from smsplatform.models import ApiToken
from tests.support.factories import ApprovalPolicyFactory, GatewayFactory, SenderIdFactory, UserFactory
from tests.support.smsc import SmscProcess, SmscThread
from tests.support.smsc_setup import Smsc, smsc_config

_counter = itertools.count(1)

# A test that uses one of these starts a server, a socket peer or a subprocess: it is a `process`
# test, run once after the parallel pass (Makefile). Tests that start one themselves carry the
# marker in their module.
PROCESS_FIXTURES = frozenset({"live_server", "smsc", "smsc_factory", "kannel_factory", "celery_worker"})
PROCESS_MARKERS = ("kannel", "celery_worker", "topology")


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & PROCESS_FIXTURES or any(item.get_closest_marker(name) for name in PROCESS_MARKERS):
            item.add_marker(pytest.mark.process)


@pytest.fixture
def roles(db: Any) -> None:
    roles_sync()


@pytest.fixture
def make_user(roles: None) -> Callable[..., Any]:
    def make(*role_names: str, username: str | None = None, superuser: bool = False) -> Any:
        return UserFactory.create(
            username=username or f"user{next(_counter)}", is_superuser=superuser, roles=role_names
        )

    return make


@pytest.fixture
def technical(make_user: Callable[..., Any]) -> Any:
    return make_user(Role.TECHNICAL, username="tech")


@pytest.fixture
def approver(make_user: Callable[..., Any]) -> Any:
    return make_user(Role.APPROVER, username="approver1")


@pytest.fixture
def marketing(make_user: Callable[..., Any]) -> Any:
    return make_user(Role.MARKETING, username="marketer")


@pytest.fixture
def token_for() -> Callable[[Any], str]:
    def issue(user: Any, name: str = "test-token") -> str:
        _, key = ApiToken.issue(user=user, name=f"{name}-{next(_counter)}")
        return key

    return issue


@pytest.fixture
def api_for(token_for: Callable[[Any], str]) -> Callable[[Any], APIClient]:
    def client(user: Any) -> APIClient:
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user)}")
        return api

    return client


@pytest.fixture
def config_policy(roles: None) -> ApprovalPolicy:
    return ApprovalPolicyFactory.create(action=ActionType.CONFIG_UPDATE, condition=Condition.ALWAYS)


@pytest.fixture
def config_token(db: Any) -> str:
    return str(platform_config_get()["base_version_token"])


def _uses_db(request: pytest.FixtureRequest) -> bool:
    return bool(request.node.get_closest_marker("django_db")) or bool(
        {"db", "transactional_db", "live_server"} & set(request.fixturenames)
    )


@pytest.fixture(autouse=True)
def _sqlite_flush_past_the_audit_trigger(request: pytest.FixtureRequest) -> Any:
    """Transactional tests end with a flush (DELETE FROM every table on SQLite), which the
    audit log's append-only trigger rightly refuses. Lift only the DELETE trigger for the
    flush and put it back before the next test: a transactional test at its start, any other
    database test too (pytest-django runs those first, but a pytest-xdist worker may get a
    file of them after a transactional test). PostgreSQL flushes with TRUNCATE, which row
    triggers do not see."""
    from smsplatform.kernel.audit_triggers import SQLITE_NO_DELETE, TABLE

    if connection.vendor != "sqlite" or not _uses_db(request):
        yield
        return
    transactional = "transactional_db" in request.fixturenames or "live_server" in request.fixturenames
    marker = request.node.get_closest_marker("django_db")
    transactional = transactional or bool(marker and marker.kwargs.get("transaction"))
    if not transactional:
        request.getfixturevalue("db")
        with connection.cursor() as cursor:
            cursor.execute(SQLITE_NO_DELETE)  # inside the test's transaction: rolled back with it
        yield
        return
    request.getfixturevalue("transactional_db")
    with connection.cursor() as cursor:
        cursor.execute(SQLITE_NO_DELETE)
    yield
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TRIGGER IF EXISTS {TABLE}_no_delete")


# Gateway codes and sender IDs the configuration tests name: config.update refuses unknown ones.
TEST_GATEWAYS = ["simulator", "sim", "other", "x", "a", "b", "c", "gw", "gw0", "gw1", "gw2"]
TEST_SENDER_IDS = ["#SHOPHK", "#SHOP", "SHOP"]


@pytest.fixture
def known_gateways(db: Any) -> None:
    """The gateways and registered sender IDs that tests name in configuration and sends (a
    simulator gateway per code in TEST_GATEWAYS; #SHOPHK, #SHOP, SHOP registered for HK). Request
    it where a test names them: module ``pytestmark = pytest.mark.usefixtures("known_gateways")``,
    or a directory conftest for a whole directory."""
    for code in TEST_GATEWAYS:
        GatewayFactory.create(code=code)
    for value in TEST_SENDER_IDS:
        SenderIdFactory.create(value=value)


@pytest.fixture(autouse=True)
def _celery_join_guard_reset() -> Iterator[None]:
    """Eager ``apply_async`` sets Celery's process-wide "a join would block" flag inside
    ``denied_join_result()`` and puts back the value it saw on entry. Threads racing eager tasks
    (the 50-sender OTP race, two beats racing alerts) interleave those saves and restores, so the
    flag can be left set after them, and a later test's ``EagerResult.get()`` in the same worker
    then fails with "Never call result.get() within a task!". Each test starts with it clear."""
    from celery._state import _set_task_join_will_block  # type: ignore[attr-defined]  # not in celery-types

    _set_task_join_will_block(False)
    yield
    _set_task_join_will_block(False)


@pytest.fixture(autouse=True)
def _smpp_journal_dir(settings: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Each test's bind workers journal into a directory of their own (never var/)."""
    settings.SMS_SMPP_JOURNAL_DIR = str(tmp_path_factory.mktemp("smpp-journal"))


@pytest.fixture
def smsc_factory(tmp_path: Path) -> Iterator[Callable[..., Smsc]]:
    """Start SMSC simulators: ``smsc_factory(mode="thread"|"process", **SmscConfig fields)``
    (see tests/support/smsc_setup.py); every one started is stopped in teardown."""
    started: list[Smsc] = []

    def start(*, mode: str = "thread", **overrides: Any) -> Smsc:
        config = smsc_config(tmp_path, f"smsc{len(started)}", **overrides)
        runner: Smsc = SmscThread(config) if mode == "thread" else SmscProcess(config)
        started.append(runner)
        return runner.start()

    yield start
    for runner in reversed(started):
        runner.stop()


@pytest.fixture
def smsc(smsc_factory: Callable[..., Smsc]) -> Smsc:
    """An SMSC simulator with the default configuration (see tests/support/smsc_setup.py)."""
    return smsc_factory()
