"""What the SMPP bind worker reads and writes through services: its status report
(gateways.services.bind_worker_status_record) and its watch for new opt-outs
(compliance.optouts.opt_out_last_id / opt_outs_active_after)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from compliance.models import OptOut
from compliance.optouts import opt_out_last_id, opt_outs_active_after
from contacts.optouts import opt_out_record
from gateways.models import BindState, BindWorkerStatus, Gateway
from gateways.services import bind_worker_status_record
from smsplatform.kernel.actor import Actor

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]
WORKER = Actor.system("smpp_worker:gw")


def report(gateway: Gateway, owner: str, state: str, **extra: Any) -> None:
    now = timezone.now()
    bind_worker_status_record(
        **{
            "actor": WORKER,
            "gateway_id": gateway.pk,
            "owner": owner,
            "host": "host-1",
            "pid": 4321,
            "state": state,
            "state_since": now,
            "started_at": now,
            "last_error": "",
            "failing_over_to": "",
            "stats": {"claims": 1},
            **extra,
        }
    )


def test_a_report_is_one_row_per_worker_updated_in_place() -> None:
    gateway = Gateway.objects.get(code="gw")
    report(gateway, "host-1:1:a", BindState.BINDING, starting=True)
    first = BindWorkerStatus.objects.get(owner="host-1:1:a")
    report(gateway, "host-1:1:a", BindState.DOWN, last_error="x" * 400, failing_over_to="gw1")
    row = BindWorkerStatus.objects.get(owner="host-1:1:a")
    assert (row.state, row.failing_over_to, row.last_error) == (BindState.DOWN, "gw1", "x" * 300)
    assert row.heartbeat_at >= first.heartbeat_at and row.stats == {"claims": 1}
    assert BindWorkerStatus.objects.count() == 1


def test_a_starting_worker_forgets_its_gateways_workers_long_gone() -> None:
    gateway, other = Gateway.objects.get(code="gw"), Gateway.objects.get(code="gw1")
    for code, owner in ((gateway, "gone"), (gateway, "recent"), (other, "gone-elsewhere")):
        report(code, owner, BindState.STOPPED)
    long_ago = timezone.now() - timedelta(days=2)
    BindWorkerStatus.objects.exclude(owner="recent").update(heartbeat_at=long_ago)
    report(gateway, "heartbeat", BindState.BOUND)  # a heartbeat forgets nothing
    assert BindWorkerStatus.objects.filter(owner="gone").exists()
    report(gateway, "new", BindState.BINDING, starting=True)
    assert set(BindWorkerStatus.objects.values_list("owner", flat=True)) == {
        "recent",
        "heartbeat",
        "new",
        "gone-elsewhere",
    }


def test_a_heartbeat_costs_what_it_did_in_the_worker() -> None:
    gateway = Gateway.objects.get(code="gw")
    report(gateway, "w", BindState.BOUND)
    with CaptureQueriesContext(connection) as queries:
        report(gateway, "w", BindState.BOUND)
    # update_or_create: its savepoint, the locking read and the update -- no audit row, no more.
    assert not [q for q in queries.captured_queries if "audit" in q["sql"].lower()]
    assert len(queries.captured_queries) <= 4


def test_new_active_opt_outs_after_an_id() -> None:
    assert opt_out_last_id() == 0
    with transaction.atomic():
        first = opt_out_record(actor=WORKER, phone="+85291230001", reason="stop", source="sms:gw")["opt_out_id"]
        lifted = opt_out_record(actor=WORKER, phone="+85291230002", reason="web", source="web_form")["opt_out_id"]
        last = opt_out_record(actor=WORKER, phone="+85291230003", reason="api", source="api")["opt_out_id"]
    OptOut.objects.filter(pk=lifted).update(lifted_at=timezone.now())
    assert opt_out_last_id() == last
    assert sorted(opt_outs_active_after(after_id=0)) == [
        (first, "+85291230001", "stop", "sms:gw"),
        (last, "+85291230003", "api", "api"),
    ]
    assert opt_outs_active_after(after_id=first) == [(last, "+85291230003", "api", "api")]
    assert opt_outs_active_after(after_id=last) == []
    with CaptureQueriesContext(connection) as queries:
        opt_outs_active_after(after_id=0)
    assert len(queries.captured_queries) == 1
