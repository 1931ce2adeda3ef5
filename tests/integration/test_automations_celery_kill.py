"""A real Celery worker SIGKILLed in the middle of an automations tick with 10,000 due enrolments:
the claim that was running rolls back whole, the next worker's tick takes the rest, and every
message is submitted exactly once (the SMSC simulator's own log is the ground truth).

Run with ``make test-celery`` (PostgreSQL + Redis)."""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db import connection
from django.utils import timezone

from campaigns.automations.engine import events_scan
from campaigns.automations.flow_models import Enrolment, EnrolmentState, Flow, FlowState
from campaigns.automations.models import CommerceEvent, EventSource
from contacts.models import Contact
from gateways.models import MessageState, OutboundMessage
from gateways.quotas import account_instance
from smsplatform.celery import app
from templates.models import Purpose, VersionApproval
from tests.integration.test_celery_kill import CeleryWorkers, celery_workers  # noqa: F401 - the fixture
from tests.support.factories import TemplateFactory, TemplateVersionFactory
from tests.support.faults import SmppWorkers, phones, smpp_gateway, submissions
from tests.support.workers import REAL_WORKER_TEST

pytestmark = REAL_WORKER_TEST
TOTAL = 10_000


_PROGRESS_SQL = (  # the enrolments' table name is the model's own
    "SELECT (SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"  # noqa: S608
    "        WHERE c.relname = %s AND l.mode = 'RowShareLock' AND l.pid <> pg_backend_pid()),"
    f"       (SELECT count(*) FROM {Enrolment._meta.db_table} WHERE flow_id = %s AND state = %s)"
)


def tick_running(flow: Flow) -> bool:
    """The tick is part-way through, seen either way so a short claim is never missed: a claim's
    transaction is open right now in the worker (it holds the row-share lock that SELECT ... FOR
    UPDATE takes on the enrolments until it commits or rolls back), or some claims have committed
    while others are still due. One statement, so the two are read at the same instant."""
    with connection.cursor() as cursor:
        cursor.execute(_PROGRESS_SQL, [Enrolment._meta.db_table, flow.pk, EnrolmentState.WAITING])
        locks, waiting = cursor.fetchone()
    return bool(locks) or 0 < waiting < TOTAL


def tick_progress(flow: Flow) -> str:
    """What the tick has done so far, for a failure message."""
    states = Counter(Enrolment.objects.filter(flow=flow).values_list("state", flat=True))
    queued = OutboundMessage.objects.filter(reference__startswith=flow.reference_prefix).count()
    return f"enrolments={dict(states)}, messages={queued}"


def flow_world(gateway: Any) -> Flow:
    account = account_instance()
    account.balance, account.monthly_quota_segments = Decimal("100000"), 10_000_000
    account.save()
    template = TemplateFactory.create(name="Shipped", purpose=Purpose.TRANSACTIONAL, first_version=None)
    version = TemplateVersionFactory.create(
        template=template,
        body="【ShopHK】Your order {{order}} has shipped.",
        fields=[{"name": "order", "type": "code", "charset": "gsm", "max_length": 20}],
        approval_status=VersionApproval.NOT_REQUIRED,
    )
    now = timezone.now()
    flow = Flow.objects.create(
        name="Order shipped",
        state=FlowState.ACTIVE,
        purpose="transactional",
        trigger_event_types=["order_shipped"],
        steps=[{"kind": "send"}],
        template_version=version,
        variables={"order": "event.order_ref"},
        sender_id="#SHOPHK",
        gateway=gateway,
        max_per_period=3,
        period_hours=24,
        monthly_budget=Decimal("100000"),
        activated_at=now - timedelta(minutes=5),
    )
    contacts = Contact.objects.bulk_create(
        [Contact(phone=p, country="HK", source="crm") for p in phones(TOTAL)], batch_size=5000
    )
    source = EventSource.objects.create(code="shop", name="Shop")
    CommerceEvent.objects.bulk_create(
        [
            CommerceEvent(
                source=source,
                event_id=f"evt-{c.pk}",
                type="order_shipped",
                contact=c,
                phone=c.phone,
                occurred_at=now - timedelta(minutes=1),
                received_at=now,
                order_ref=f"A-{c.pk}",
                payload_hash="0" * 64,
            )
            for c in contacts
        ],
        batch_size=5000,
    )
    while events_scan()["events"]:
        pass
    assert Enrolment.objects.filter(flow=flow, state=EnrolmentState.WAITING).count() == TOTAL
    return flow


def test_celery_worker_killed_mid_tick_submits_every_message_once(
    celery_workers: CeleryWorkers,  # noqa: F811
    smpp_workers: SmppWorkers,
    smsc_factory: Any,
) -> None:
    smsc = smsc_factory(receipt_delay=(0.0, 0.02), keep_records=1000)
    gateway = smpp_gateway("smpp-a", smsc, priority=1)
    flow = flow_world(gateway)
    celery_workers.start()
    smpp_workers.start("smpp-a")
    app.send_task("automations.tick")  # what beat does every few seconds

    deadline = time.monotonic() + 60
    while not tick_running(flow):
        assert time.monotonic() < deadline, f"the tick never started: {tick_progress(flow)}\n{celery_workers.logs()}"
        time.sleep(0.002)
    celery_workers.kill()
    time.sleep(0.5)  # the server notices its client is gone and rolls the claim back
    killed_with_waiting = Enrolment.objects.filter(flow=flow, state=EnrolmentState.WAITING).count()
    assert killed_with_waiting > 0, f"the kill came after the whole tick: {tick_progress(flow)}"
    # What was queued belongs to enrolments that moved on: a rolled-back claim left neither.
    queued = OutboundMessage.objects.filter(reference__startswith=flow.reference_prefix).count()
    assert queued == TOTAL - killed_with_waiting

    celery_workers.start()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        app.send_task("automations.tick")
        time.sleep(1.0)
        waiting = Enrolment.objects.filter(flow=flow, state=EnrolmentState.WAITING).exists()
        pending = OutboundMessage.objects.filter(
            reference__startswith=flow.reference_prefix, state__in=[MessageState.QUEUED, MessageState.SUBMITTING]
        ).exists()
        if not waiting and not pending:
            break
    time.sleep(1.0)  # the last receipts
    smpp_workers.stop_all()

    states = Counter(Enrolment.objects.filter(flow=flow).values_list("state", flat=True))
    context = f"enrolments={dict(states)}, killed_with_waiting={killed_with_waiting}\n{celery_workers.logs()}"
    assert states == {EnrolmentState.COMPLETED: TOTAL}, context
    references = list(
        OutboundMessage.objects.filter(reference__startswith=flow.reference_prefix).values_list("reference", flat=True)
    )
    assert len(references) == TOTAL and len(set(references)) == TOTAL, context
    _records, per_phone = submissions(smsc)
    assert len(per_phone) == TOTAL and set(per_phone.values()) == {1}, "a message accepted twice (or missing)"
