"""The readiness report of /readyz for a terminal: ``manage.py platform_status`` (``--json`` for
scripts). Exits 1 when the platform is not ready, so a restore or deploy script can gate on it."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from smsplatform.operations.health import readiness

MARKS = {"ok": "OK  ", "warn": "WARN", "fail": "FAIL"}


class Command(BaseCommand):
    help = "Print the platform's readiness: database, migrations, broker, beat, gateway binds, receipt lag."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--json", action="store_true", help="Print the /readyz JSON body.")
        parser.add_argument(
            "--skip",
            default="",
            help="Comma-separated checks to leave out (e.g. beat,broker for a restored copy that no worker uses).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        report = readiness(skip={s.strip() for s in options["skip"].split(",") if s.strip()})
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
        else:
            for check in report["checks"]:
                line = f"{MARKS[check['status']]} {check['name']:<15}"
                if check.get("detail"):
                    line += f" {check['detail']}"
                style = {"ok": self.style.SUCCESS, "warn": self.style.WARNING}.get(check["status"], self.style.ERROR)
                self.stdout.write(style(line))
            self.stdout.write(f"\n{'ready' if report['ready'] else 'NOT READY'} ({report['status']})")
        if not report["ready"]:
            raise CommandError("not ready: " + ", ".join(report["failing"]))
