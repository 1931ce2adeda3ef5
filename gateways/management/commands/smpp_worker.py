"""Run the SMPP bind worker for one gateway until SIGTERM/SIGINT."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from gateways.adapters import adapter_for
from gateways.models import Gateway, Provider
from gateways.smpp.worker import BindWorker


class Command(BaseCommand):
    help = "Hold an SMPP transceiver bind for a gateway and submit its queued messages."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--gateway", required=True, help="Gateway code (provider smpp).")
        parser.add_argument("--batch-size", type=int, default=1000)
        parser.add_argument("--idle-exit", type=float, default=None, help="Exit after N idle seconds (benchmarks).")

    def handle(self, *args: Any, **options: Any) -> None:
        gateway = Gateway.objects.filter(code=options["gateway"], provider=Provider.SMPP).first()
        if gateway is None:
            raise CommandError(f"No SMPP gateway {options['gateway']!r}.")
        password = adapter_for(gateway).secret("password")
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        worker = BindWorker(gateway, password=password, batch_size=options["batch_size"])
        stats = worker.run(stop=stop, idle_exit_after=options["idle_exit"])
        self.stdout.write(f"smpp_worker {gateway.code} stopped: {stats}")
