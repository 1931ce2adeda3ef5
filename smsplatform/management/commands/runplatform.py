"""Start web, the short-link server, Celery worker and beat together on the embedded defaults (make run)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand

# The short domain's server is started by its module (templates.short_links.server: the
# production command line); the kernel does not import the templates app.
SHORT_SERVER = "templates.short_links.server"
SHORT_ADDR = "127.0.0.1:8001"  # templates.short_links.server.DEFAULT_BIND


class Command(BaseCommand):
    help = "Run the web server, the short-link server, a Celery worker and beat in one terminal; Ctrl-C stops all."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--addr", default=os.environ.get("SMS_ADDR", "127.0.0.1:8000"))
        parser.add_argument(
            "--short-addr",
            default=os.environ.get("SMS_SHORT_ADDR", SHORT_ADDR),
            help="where the short domain's server (templates.short_links.app under gunicorn) listens",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        python = sys.executable
        commands = {
            "web": [python, "manage.py", "runserver", options["addr"], "--noreload", "--insecure"],
            # The short domain's own server, with the production command line (it execs gunicorn).
            "short": [python, "-m", SHORT_SERVER, "--bind", options["short_addr"], "--workers", "2"],
            # One process runs the worker and the embedded beat (DatabaseScheduler).
            "worker+beat": [
                python, "-m", "celery", "-A", "smsplatform", "worker", "--beat",
                "--pool=solo", "--loglevel=INFO",
            ],
        }  # fmt: skip
        # Fixed argument lists built above; no shell, no user input.
        processes = {name: subprocess.Popen(cmd) for name, cmd in commands.items()}  # noqa: S603
        self.stdout.write(
            f"Platform running: http://{options['addr']}/admin/  MCP: http://{options['addr']}/mcp  "
            f"short links: http://{options['short_addr']}/s/<code>"
        )

        def stop(*_: Any) -> None:
            for proc in processes.values():
                if proc.poll() is None:
                    proc.terminate()

        signal.signal(signal.SIGTERM, stop)
        try:
            while all(proc.poll() is None for proc in processes.values()):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            stop()
            for proc in processes.values():
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        failed = [name for name, proc in processes.items() if proc.returncode not in (0, -signal.SIGTERM, None)]
        if failed:
            self.stderr.write(f"Stopped: {', '.join(failed)} exited with an error.")
