"""Run the SMPP bind worker for one gateway until SIGTERM/SIGINT."""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from gateways.adapters import adapter_for
from gateways.models import Gateway, Provider
from gateways.smpp.worker import LANES, STATEMENT_ROWS, BindWorker


class Command(BaseCommand):
    help = "Hold an SMPP transceiver bind for a gateway and submit its queued messages."
    # A long-running worker: the system checks would import every URLconf (REST, MCP, admin)
    # only to throw it away; `manage.py check` runs them.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--gateway", required=True, help="Gateway code (provider smpp).")
        parser.add_argument("--batch-size", type=int, default=2000, help="Messages claimed at a time.")
        parser.add_argument("--flush-interval", type=float, default=0.2, help="Seconds between writes of answers.")
        parser.add_argument(
            "--statement-rows",
            type=int,
            default=STATEMENT_ROWS,
            help="While codes are being sent (lane bulk), the most rows one claim or flush statement "
            "takes: a batch is claimed and written in pieces this size, and a yield to a code begins "
            "between two of them. With no code in sight, whole batches.",
        )
        parser.add_argument("--idle-exit", type=float, default=None, help="Exit after N idle seconds (benchmarks).")
        parser.add_argument(
            "--lane",
            choices=LANES,
            default="all",
            help="What this worker sends: everything (all), or one lane of a gateway split in two, each "
            "worker on a bind of its own: priority (OTP, transactional, test) or bulk (campaigns; it "
            "also takes priority messages left queued past the gateway's priority_grace_seconds).",
        )
        parser.add_argument(
            "--nice",
            type=int,
            default=0,
            help="Lower this process's CPU priority by N (os.nice) before binding: a bulk-lane worker "
            "with --nice 10 leaves the CPU to the priority lane and the web app on a shared machine.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["nice"] < 0 or options["nice"] > 19:
            raise CommandError("--nice must be 0-19 (a worker only ever lowers its own priority).")
        gateway = Gateway.objects.filter(code=options["gateway"], provider=Provider.SMPP).first()
        if gateway is None:
            raise CommandError(f"No SMPP gateway {options['gateway']!r}.")
        if options["nice"]:
            os.nice(options["nice"])
        password = adapter_for(gateway).secret("password")
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        # Every message makes a few short-lived objects: collect the young generation less often,
        # and keep the objects of startup (Django, models, modules) out of full collections.
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 50, 100)
        # Four threads share the interpreter (claims, the link, the flush, the priority lane): hand
        # the GIL over every 1 ms rather than 5, so an OTP's claim -- a few database round trips,
        # each giving up the GIL -- does not wait out the others' slices at every step.
        sys.setswitchinterval(0.001)
        worker = BindWorker(
            gateway,
            password=password,
            batch_size=options["batch_size"],
            flush_interval=options["flush_interval"],
            lane=options["lane"],
            statement_rows=options["statement_rows"],
        )
        stats = worker.run(stop=stop, idle_exit_after=options["idle_exit"])
        self.stdout.write(f"smpp_worker {gateway.code} stopped: {stats}")
