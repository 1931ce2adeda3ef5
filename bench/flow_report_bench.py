"""Automation-flow reports at scale on PostgreSQL: a million outbound messages, of which --flow-share
are messages of --flows automation flows (batch NULL, reference automation:<flow>:<enrolment>:<step>)
and the rest other traffic in the same id space.

Usage: python bench/flow_report_bench.py [--messages 1000000] [--flows 20] [--flow-share 0.2]
       [--repeat 5] [--keep] [--database-url URL]

Builds a throwaway database with set-based SQL (generate_series), then:
- the first full refresh of the flow aggregates (reporting.aggregates.refresh_flow_messages, run to
  completion);
- campaign_reports.get with flow_id (the largest flow), timed --repeat times (median);
- freshness: 1,000 of the newest flow messages turned from submitted to delivered, then one refresh
  (their blocks are re-read as pending): its time plus the beat interval is the report's lag;
- a refresh with nothing to do (the steady state between sends).
The figures are "loaded": the machine is shared; its load average is printed with them.
Without PostgreSQL it prints why and exits 0.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
print = functools.partial(print, flush=True)

from common import database_url_argument, load, machine, on_throwaway_database, summary, timed  # noqa: E402

DATASET = """
INSERT INTO gateways_outboundmessage (gateway_id, sender_id, destination, country, body, encoding, segments, cost,
    currency, purpose, state, reference, quota_reference, request_receipt, batch_id, contact_id, attempts,
    error_code, error_reason, created_at, submitted_at, final_at, updated_at)
SELECT {gateway} + (i % 2), '#SHOPHK', '+852' || (60000000 + i)::text, 'HK', 'x', 'GSM-7', 1, 0.45, 'HKD',
       CASE WHEN flow THEN 'marketing' ELSE 'otp' END,
       CASE WHEN i % 100 < 92 THEN 'delivered' WHEN i % 100 < 97 THEN 'failed'
            WHEN i % 100 < 99 THEN 'expired' ELSE 'submitted' END,
       CASE WHEN flow THEN 'automation:' || ({first_flow} + ((i / 7) % {flows})) || ':' || i || ':0' ELSE 'otp:' || i END,
       'q', true, NULL, NULL, 1,
       CASE WHEN i % 100 BETWEEN 92 AND 96 THEN 'E' || (i % 3) ELSE '' END, '',
       t0 + (i % 86400) * interval '1 second', t0 + (i % 86400) * interval '1 second' + interval '1 second',
       CASE WHEN i % 100 < 99 THEN t0 + (i % 86400) * interval '1 second' + interval '9 seconds' END, now()
FROM (SELECT i, timestamptz '2026-11-02 00:00+00' t0, (i % 1000) < {share_permille} flow
      FROM generate_series(1, {n}) i) g
"""


def build(args: argparse.Namespace) -> tuple[int, list[int]]:
    from django.contrib.auth import get_user_model
    from django.db import connection

    from campaigns.automations.flow_models import Flow
    from gateways.models import Gateway

    get_user_model().objects.create_superuser("bench", "bench@example.hk", "x")
    gw = Gateway.objects.create(code="sim-a", name="A", provider="simulator", countries=["HK"])
    Gateway.objects.create(code="sim-b", name="B", provider="simulator", countries=["HK"])
    flows = [
        Flow.objects.create(name=f"Flow {i}", trigger_event_types=["cart_abandoned"], steps=[{"kind": "send"}]).pk
        for i in range(args.flows)
    ]
    assert flows == list(range(flows[0], flows[0] + args.flows))
    sql = DATASET.format(
        n=args.messages,
        gateway=gw.pk,
        flows=args.flows,
        first_flow=flows[0],
        share_permille=int(args.flow_share * 1000),
    )
    t = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(sql)
        cursor.execute("ANALYZE gateways_outboundmessage")
    print(f"  {args.messages} messages inserted in {time.perf_counter() - t:.1f} s")
    return gw.pk, flows


def run(args: argparse.Namespace) -> None:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from gateways.models import OutboundMessage
    from reporting.aggregates import refresh_flow_messages
    from reporting.selectors import flow_report_get
    from smsplatform.kernel.actor import Actor, Channel
    from smsplatform.schedules import REPORT_REFRESH_SECONDS

    print(machine())
    _gw, flows = build(args)
    t = time.perf_counter()
    runs, blocks = 0, 0
    while True:  # the first refresh, to completion (blocks are capped per run; ids lag one run)
        done = refresh_flow_messages()
        runs += 1
        blocks += done
        if runs >= 2 and done == 0:
            break
    print(f"first full refresh: {blocks} id blocks in {time.perf_counter() - t:.1f} s, {runs} runs (loaded)")
    actor = Actor(user=get_user_model().objects.get(username="bench"), channel=Channel.API)
    flow_id = flows[0]
    report = flow_report_get(actor=actor, flow_id=flow_id)
    expected = OutboundMessage.objects.filter(
        batch__isnull=True, reference__startswith=f"automation:{flow_id}:"
    ).count()
    print(
        f"flow {flow_id}: {report['messages']['total']} messages in the report, {expected} counted in the table; "
        f"{report['messages']['delivered']} delivered, {report['messages']['pending_receipts']} pending"
    )
    assert report["messages"]["total"] == expected
    print(load())
    timings, _ = timed(lambda: flow_report_get(actor=actor, flow_id=flow_id), args.repeat)
    print(f"campaign_reports.get (flow_id): {summary(timings, 1000, 'ms')} (loaded)")
    timings, _ = timed(lambda: refresh_flow_messages(), args.repeat)
    print(f"refresh with nothing new: {summary(timings, 1000, 'ms')} (loaded)")
    # Freshness: the newest 1,000 flow messages were pending and now have their receipts.
    newest = list(
        OutboundMessage.objects.filter(batch__isnull=True, reference__startswith="automation:")
        .order_by("-id")
        .values_list("id", flat=True)[:1000]
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE gateways_outboundmessage SET state = 'submitted', final_at = NULL WHERE id = ANY(%s)", [newest]
        )
    # Every block read once more at t+5 min (each has 1% of its messages pending forever)...
    start = timezone.now()
    while refresh_flow_messages(now=start + timedelta(minutes=5)):
        pass
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE gateways_outboundmessage SET state = 'delivered', final_at = now() WHERE id = ANY(%s)", [newest]
        )
    # ...then 31 s later: the receipt path marks blocks through DeliveryReceipt.applied_at; this
    # data set has no receipt rows, so the newest blocks' pending re-check finds them (same work).
    timings, _ = timed(lambda: refresh_flow_messages(now=start + timedelta(minutes=5, seconds=31)), 1)
    delivered = flow_report_get(actor=actor, flow_id=flow_id)["messages"]["pending_receipts"]
    print(
        f"freshness: 1,000 flow receipts folded by one refresh in {timings[0] * 1000:.0f} ms (beat every "
        f"{REPORT_REFRESH_SECONDS} s); flow {flow_id} pending now {delivered} (loaded)"
    )
    # Old blocks with messages that never get a receipt: re-read at most MAX_FLOW_RECHECKS_PER_RUN a run.
    timings, _ = timed(lambda: refresh_flow_messages(now=start + timedelta(minutes=8)), 1)
    print(f"a run re-reading old pending blocks (capped): {timings[0] * 1000:.0f} ms (loaded)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--flows", type=int, default=20)
    parser.add_argument("--flow-share", type=float, default=0.2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true")
    database_url_argument(parser)
    args = parser.parse_args()
    on_throwaway_database("flow_report_bench", args.database_url, lambda: run(args), keep=args.keep)


if __name__ == "__main__":
    main()
