"""deliver_sm is acknowledged only once what it carried is committed (a SIGKILL loses nothing)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from gateways.models import DeliveryReceipt, Gateway, MessageState
from gateways.smpp import worker as worker_module
from gateways.smpp.worker import BindWorker
from tests.support.smpp import queue, smpp_gateway, state
from tests.support.smsc_setup import PASSWORD

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("known_gateways")]


def test_receipts_are_acknowledged_after_their_commit(smsc: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = smpp_gateway(smsc)
    messages = [queue(f"+852912380{i:02d}") for i in range(10)]
    seen: list[tuple[int, int]] = []
    real = worker_module.outcomes_record

    def recording(**kwargs: Any) -> Any:
        receipts = list(kwargs["receipts"])
        if receipts:
            stats = smsc.stats()
            if stats["sessions"]:  # the last flush runs after the unbind
                seen.append((len(receipts), stats["outstanding_deliver_sm"]))
        return real(**{**kwargs, "receipts": receipts})

    monkeypatch.setattr(worker_module, "outcomes_record", recording)
    worker = BindWorker(Gateway.objects.get(pk=gateway.pk), password=PASSWORD, flush_interval=0.05)
    worker.run(stop=threading.Event(), idle_exit_after=1.0)
    assert seen, "no flush carried receipts while bound"
    # Every receipt being committed is still unacknowledged at the SMSC.
    assert all(outstanding >= count for count, outstanding in seen), seen
    assert {state(m) for m in messages} == {MessageState.DELIVERED}
    assert not DeliveryReceipt.objects.filter(applied_at__isnull=True).exists()
    assert smsc.stats()["outstanding_deliver_sm"] == 0
