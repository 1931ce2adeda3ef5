"""Start web, the short-link server, Celery worker and beat together on the embedded defaults (make run)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError

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
        # Fixed argument lists built above; no shell, no user input. Each child runs in its own
        # session: a Ctrl-C in the terminal reaches only this process, which then stops the children
        # one way (SIGTERM: celery's warm shutdown, gunicorn's graceful stop) and waits for them,
        # instead of each child getting SIGINT at once and dying its own way (celery exits 1 then).
        processes = {
            name: subprocess.Popen(cmd, start_new_session=True)  # noqa: S603
            for name, cmd in commands.items()
        }
        self.stdout.write(
            f"Platform running: http://{options['addr']}/admin/  MCP: http://{options['addr']}/mcp  "
            f"short links: http://{options['short_addr']}/s/<code>  (Ctrl-C stops everything)"
        )
        self.stdout.flush()
        requested: list[str] = []  # the signal that asked us to stop, if any

        def stop_requested(signum: int, _frame: Any) -> None:
            if not requested:
                requested.append(signal.Signals(signum).name)

        signal.signal(signal.SIGTERM, stop_requested)
        signal.signal(signal.SIGINT, stop_requested)
        while not requested and all(proc.poll() is None for proc in processes.values()):
            time.sleep(0.2)
        exited = {name: proc.returncode for name, proc in processes.items() if proc.poll() is not None}
        if requested:
            self.stdout.write(f"{requested[0]} received: stopping web, short links, worker and beat...")
            self.stdout.flush()
        for proc in processes.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in processes.values():
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        failed = stop_failures(processes, exited, requested=bool(requested))
        if failed:
            raise CommandError(f"Stopped: {', '.join(failed)}.")
        self.stdout.write("Stopped cleanly.")


# How long each child may take to stop after SIGTERM (celery finishes its current task).
STOP_TIMEOUT = 20


def stop_failures(processes: dict[str, subprocess.Popen[Any]], exited: dict[str, int], *, requested: bool) -> list[str]:
    """What went wrong, in words: a child that exited by itself before any stop was asked for (its
    code, even 0: the platform is down), or one that did not stop cleanly when asked. A child
    stopped by our SIGTERM (exit 0, or killed by it) stopped cleanly."""
    clean = (0, -signal.SIGTERM, 128 + signal.SIGTERM)
    out = []
    for name, proc in processes.items():
        if name in exited:
            out.append(f"{name} exited on its own with code {exited[name]}")
        elif proc.returncode == -signal.SIGKILL:
            out.append(f"{name} did not stop within {STOP_TIMEOUT}s and was killed")
        elif proc.returncode not in clean:
            out.append(f"{name} exited with code {proc.returncode} while stopping")
    if not requested and not out:
        out.append("the platform stopped without being asked")
    return out
