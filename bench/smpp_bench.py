"""The SMPP world the latency benches share: the SMSC simulator in its own process, a gateway on
it with a registered sender and funds, a campaign's queued messages written in bulk, the bind
worker as production runs it (``manage.py smpp_worker``), and latency percentiles.

Call after ``django.setup()`` (bench/common.py's throwaway_database points Django at the bench's
database); the password of the simulator's ``bench`` account is in BENCH_SMPP_PASSWORD."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from common import ROOT

PASSWORD = "sim-pass"
SENDER = "#SHOPHK"


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(label: str, latencies: list[float], what: str = "message") -> str:
    if not latencies:
        return f"{label}: no {what} measured"
    ms = [x * 1000 for x in latencies]
    return (
        f"{label}: n={len(ms)}  p50 {percentile(ms, 50):.0f} ms  p95 {percentile(ms, 95):.0f} ms  "
        f"p99 {percentile(ms, 99):.0f} ms  max {max(ms):.0f} ms"
    )


def smsc_start(tmp: Path) -> Any:
    """The SMSC simulator in its own process, logging every submit_sm to ``tmp/smsc.jsonl``."""
    from tests.support.smsc import SmscConfig, SmscProcess

    return SmscProcess(
        SmscConfig(
            port=0,
            credentials={"bench": PASSWORD},
            log_path=str(tmp / "smsc.jsonl"),
            receipt_delay=(0.0, 0.01),
            keep_records=10,
            log_flush_interval=0.5,
        ),
        cwd=ROOT,
    ).start()


def gateway_on(smsc: Any, code: str, *, window: int, rate: int = 100_000) -> Any:
    """An SMPP gateway for HK on the simulator, the registered sender, and an account with room
    for any bench (quota and 100M of balance, topped up through the service)."""
    from gateways.models import Gateway, GatewayRate, Provider, SenderId, SenderIdKind, SenderIdStatus
    from gateways.quotas import account_instance, account_top_up
    from smsplatform.kernel.actor import Actor

    gateway = Gateway.objects.create(
        code=code,
        name="bench",
        provider=Provider.SMPP,
        countries=["HK"],
        window_size=window,
        max_rate_per_second=rate,
        encodings=["GSM-7", "UCS-2"],
        settings={"host": smsc.host, "port": smsc.port, "system_id": "bench"},
        credentials_env={"password": "BENCH_SMPP_PASSWORD"},
    )
    GatewayRate.objects.create(gateway=gateway, country="HK", price_per_segment=Decimal("0.30"))
    SenderId.objects.get_or_create(
        value=SENDER,
        defaults={
            "kind": SenderIdKind.SSRS,
            "brand": "Shop",
            "status": SenderIdStatus.REGISTERED,
            "regions": ["HK"],
            "ssrs_registered_regions": ["HK"],
        },
    )
    account = account_instance()
    account.monthly_quota_segments = 100_000_000
    account.save(update_fields=["monthly_quota_segments", "updated_at"])
    if account.balance < Decimal("100000000"):
        account_top_up(
            actor=Actor.system("bench"),
            amount=Decimal("100000000") - account.balance,
            reason="bench funds",
            idempotency_key=f"bench-top-up-{code}",
        )
    return gateway


def campaign_messages_write(gateway: Any, count: int, reference: str) -> float:
    """A campaign's ``count`` queued marketing messages (+8526 numbers), written in bulk as the
    dispatch writes them, with their quota reservation. Returns the seconds it took."""
    from django.db import transaction

    from gateways.models import OutboundMessage, QuotaReservation
    from tests.support.smpp import campaign_message_rows

    QuotaReservation.objects.create(reference=reference, segments=count, amount=Decimal("0.3") * count)
    started = time.perf_counter()
    for start in range(0, count, 50_000):
        with transaction.atomic():
            OutboundMessage.objects.bulk_create(
                campaign_message_rows(gateway, start, min(count, start + 50_000), reference, SENDER), batch_size=10_000
            )
    return time.perf_counter() - started


def start_worker(smsc: Any, gateway_code: str, *options: str) -> subprocess.Popen[bytes]:
    """The bind worker as production runs it (``options``: more of its command line, such as
    ``--lane bulk --nice 10``), returned once it has bound."""
    binds = int(smsc.stats().get("binds", 0))
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "smpp_worker", "--gateway", gateway_code, "--idle-exit", "3600", *options],
        cwd=ROOT,
        env=os.environ.copy(),
    )
    while int(smsc.stats().get("binds", 0)) <= binds:
        if worker.poll() is not None:
            raise RuntimeError("the worker exited before binding")
        time.sleep(0.05)
    return worker


def stop_worker(*workers: subprocess.Popen[bytes]) -> None:
    for worker in workers:
        worker.terminate()
    for worker in workers:
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def wait_sent(gateway_code: str, timeout: float, *, purpose: str | None = None, expected: int = 0) -> None:
    """Until nothing is queued or being submitted on the gateway (and, with ``purpose``, at least
    ``expected`` messages of that purpose exist), or ``timeout`` seconds."""
    from gateways.models import MessageState, OutboundMessage

    deadline = time.monotonic() + timeout
    pending = (MessageState.QUEUED, MessageState.SUBMITTING)
    messages = OutboundMessage.objects.filter(gateway__code=gateway_code)
    while time.monotonic() < deadline:
        enough = purpose is None or messages.filter(purpose=purpose).count() >= expected
        if enough and not messages.filter(state__in=pending).exists():
            return
        time.sleep(0.5)
    print(f"warning: messages still pending after {timeout:.0f}s", flush=True)


def order_shipped_flow(gateway: Any, activated_at: Any) -> Any:
    """The benches' active transactional flow: an order_shipped event sends "your order ... has
    shipped" (an approved-by-rule transactional template) at once, at most 5 a day per contact."""
    from campaigns.automations.flow_models import Flow, FlowState
    from templates.models import Purpose, Template, TemplateVersion, VersionApproval

    template = Template.objects.create(name="Shipped", purpose=Purpose.TRANSACTIONAL, language="en")
    version = TemplateVersion.objects.create(
        template=template,
        version=1,
        name="Shipped",
        purpose=Purpose.TRANSACTIONAL,
        language="en",
        body="ShopHK: your order {{order}} has shipped.",
        fields=[{"name": "order", "type": "code", "charset": "gsm", "max_length": 20}],
        approval_status=VersionApproval.NOT_REQUIRED,
    )
    return Flow.objects.create(
        name="Order shipped",
        state=FlowState.ACTIVE,
        purpose="transactional",
        trigger_event_types=["order_shipped"],
        steps=[{"kind": "send"}],
        template_version=version,
        variables={"order": "event.order_ref"},
        sender_id=SENDER,
        gateway=gateway,
        max_per_period=5,
        period_hours=24,
        monthly_budget=Decimal("1000000"),
        activated_at=activated_at,
    )
