"""A real Kannel (Debian's ``kannel`` package) for tests: bearerbox + smsbox on free loopback ports.

``kannel_factory`` writes a kannel.conf into a temp dir with one SMPP ``smsc`` group pointing at
the SMSC simulator, a ``sendsms-user`` and, optionally, a catch-all ``sms-service`` whose get-url
is the platform's inbound callback; it starts bearerbox, then smsbox, and waits until the sendsms
port answers and the SMPP link is online. Teardown kills both with SIGKILL (Kannel takes many
seconds to stop on SIGTERM) and reaps them.

The ``kannel_factory`` fixture is in tests/gateways/conftest.py. Tests that use it carry ``@requires_kannel`` (skipped with a reason when bearerbox is not
installed; ``bash scripts/install_kannel.sh`` installs it).

``CallbackGate`` wraps pytest-django's live server so that smsbox's callbacks can be used from
module-scoped Kannel fixtures: see its docstring.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest


def _binary(name: str) -> str | None:
    # Debian installs the boxes in /usr/sbin, which is not on every user's PATH.
    found = shutil.which(name)
    if found:
        return found
    candidate = Path("/usr/sbin") / name
    return str(candidate) if os.access(candidate, os.X_OK) else None


BEARERBOX, SMSBOX = _binary("bearerbox"), _binary("smsbox")
KANNEL_INSTALLED = BEARERBOX is not None and SMSBOX is not None
requires_kannel = pytest.mark.skipif(
    not KANNEL_INSTALLED,
    reason="Kannel is not installed (bearerbox/smsbox not found); run `bash scripts/install_kannel.sh`",
)

SENDSMS_USER, SENDSMS_PASSWORD = "platform", "sendsms-test-password"
ADMIN_PASSWORD = "admin-test-password"
SMSC_ID = "sim"
START_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _quote(value: str) -> str:
    """A kannel.conf string value: double-quoted, with " and \\ escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class Kannel:
    workdir: Path
    smsc_host: str
    smsc_port: int
    system_id: str
    smsc_password: str
    inbound_url: str = ""
    system_type: str = ""
    # Log level of both boxes' log files (0 debug .. 4 panic) and the SMPP window (submit_sm in
    # flight): the tests want everything logged and a small window; benchmarks raise both.
    log_level: int = 0
    max_pending_submits: int = 10
    admin_port: int = field(default_factory=free_port)
    smsbox_port: int = field(default_factory=free_port)
    sendsms_port: int = field(default_factory=free_port)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def conf_path(self) -> Path:
        return self.workdir / "kannel.conf"

    @property
    def sendsms_url(self) -> str:
        return f"http://127.0.0.1:{self.sendsms_port}/cgi-bin/sendsms"

    def conf(self) -> str:
        lines = [
            "group = core",
            f"admin-port = {self.admin_port}",
            "admin-interface = 127.0.0.1",
            f"admin-password = {_quote(ADMIN_PASSWORD)}",
            f"status-password = {_quote(ADMIN_PASSWORD)}",
            'admin-allow-ip = "127.0.0.1"',
            f"smsbox-port = {self.smsbox_port}",
            "smsbox-interface = 127.0.0.1",
            'box-allow-ip = "127.0.0.1"',
            f"log-file = {_quote(str(self.workdir / 'bearerbox.log'))}",
            f"log-level = {self.log_level}",
            f"access-log = {_quote(str(self.workdir / 'bearerbox-access.log'))}",
            "dlr-storage = internal",
            "sms-resend-retry = 0",
            "",
            "group = smsc",
            "smsc = smpp",
            f"smsc-id = {SMSC_ID}",
            f"host = {self.smsc_host}",
            f"port = {self.smsc_port}",
            "transceiver-mode = true",
            f"smsc-username = {_quote(self.system_id)}",
            f"smsc-password = {_quote(self.smsc_password)}",
            f"system-type = {_quote(self.system_type)}",
            "interface-version = 34",
            "reconnect-delay = 1",
            "enquire-link-interval = 30",
            f"max-pending-submits = {self.max_pending_submits}",
            "wait-ack = 30",
            "",
            "group = smsbox",
            "bearerbox-host = 127.0.0.1",
            f"bearerbox-port = {self.smsbox_port}",
            f"sendsms-port = {self.sendsms_port}",
            "sendsms-interface = 127.0.0.1",
            f"log-file = {_quote(str(self.workdir / 'smsbox.log'))}",
            f"log-level = {self.log_level}",
            f"access-log = {_quote(str(self.workdir / 'smsbox-access.log'))}",
            "mo-recode = true",
            "http-request-retry = 0",
            "",
            "group = sendsms-user",
            f"username = {_quote(SENDSMS_USER)}",
            f"password = {_quote(SENDSMS_PASSWORD)}",
            "max-messages = 1",
            "concatenation = true",
            "",
        ]
        if self.inbound_url:
            lines += [
                "group = sms-service",
                "keyword = default",
                "catch-all = true",
                "max-messages = 0",
                f"get-url = {_quote(self.inbound_url)}",
                "",
            ]
        return "\n".join(lines)

    def _spawn(self, binary: str, name: str) -> None:
        out = (self.workdir / f"{name}.out").open("wb")
        process = subprocess.Popen(
            # The log files get everything (log-level 0); the console only warnings and worse.
            [binary, "-v", "2", str(self.conf_path)],
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed as one in teardown
        )
        out.close()
        self.processes.append(process)

    def start(self, timeout: float = START_TIMEOUT) -> Kannel:
        assert BEARERBOX and SMSBOX, "Kannel is not installed"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.conf(), encoding="utf-8")
        deadline = time.monotonic() + timeout
        self._spawn(BEARERBOX, "bearerbox")
        self._wait(lambda: self.port_open(self.smsbox_port), deadline, "bearerbox's smsbox port")
        self._spawn(SMSBOX, "smsbox")
        self._wait(lambda: self.port_open(self.sendsms_port), deadline, "smsbox's sendsms port")
        self._wait(self.smsc_online, deadline, "the SMPP link to the SMSC simulator")
        return self

    def port_open(self, port: int) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
        return False

    def _wait(self, ready: Callable[[], bool], deadline: float, what: str) -> None:
        while time.monotonic() < deadline:
            dead = [p for p in self.processes if p.poll() is not None]
            if dead:
                raise RuntimeError(f"Kannel exited (rc={dead[0].returncode}) waiting for {what}:\n{self.logs()}")
            if ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"Kannel: timed out waiting for {what}:\n{self.logs()}")

    def status(self) -> str:
        try:
            response = httpx.get(
                f"http://127.0.0.1:{self.admin_port}/status.txt",
                params={"password": ADMIN_PASSWORD},
                timeout=2.0,
            )
        except httpx.HTTPError:
            return ""
        return response.text

    def smsc_online(self) -> bool:
        return any(SMSC_ID in line and "(online" in line for line in self.status().splitlines())

    def logs(self, tail: int = 60) -> str:
        chunks = []
        for name in ("bearerbox.out", "bearerbox.log", "smsbox.out", "smsbox.log"):
            path = self.workdir / name
            if path.exists():
                lines = path.read_text(encoding="utf-8", errors="replace").splitlines()[-tail:]
                chunks.append(f"--- {name} ---\n" + "\n".join(lines))
        return "\n".join(chunks)

    def kill(self) -> None:
        """SIGKILL: Kannel lingers for many seconds on SIGTERM, and no state of it is kept."""
        for process in reversed(self.processes):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        self.processes.clear()


@dataclass(frozen=True)
class Callback:
    """One request the live server answered: path with its query, and the HTTP status."""

    path: str
    query: str
    status: int


class CallbackGate:
    """Wraps pytest-django's (session-scoped) live server app while Kannel tests run.

    * It records every request it answers (``calls``), so a test can wait until smsbox really
      called back, and see what was answered (a forged callback's 403, for instance).
    * It is shut between tests (``open``/``shut``): smsbox's late callbacks then get 503 without
      touching the database, which is being flushed for the next test.
    * With an in-memory SQLite test database the live server thread shares the test thread's
      connection, and one connection used from two threads at once breaks (interleaved
      transactions, "no such savepoint"). ``db()`` is the lock that the server takes around
      every request: the test thread holds it while it uses the database. On PostgreSQL each
      thread has its own connection and ``db()`` holds nothing.
    * ``hold()`` is that lock whatever the database: callbacks wait while the test holds it
      (around a submit, so that its receipts come after the submit's answer is recorded).

    ``restore()`` puts the live server's own app back.
    """

    def __init__(self, live_server: Any) -> None:
        self._httpd = live_server.thread.httpd
        self._app = self._httpd.get_app()
        self._lock = threading.RLock()
        # pytest-django hands the server thread the test thread's connections exactly when they
        # are in-memory SQLite ones.
        self._shares_connection = bool(live_server.thread.connections_override)
        self._open = False
        self.calls: list[Callback] = []
        self._httpd.set_app(self)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path, query = str(environ.get("PATH_INFO", "")), str(environ.get("QUERY_STRING", ""))
        with self._lock:
            if not self._open:
                start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
                self.calls.append(Callback(path, query, 503))
                return [b"between tests"]
            statuses: list[str] = []

            def recording_start_response(status: str, headers: list[Any], exc_info: Any = None) -> Any:
                statuses.append(status)
                return start_response(status, headers, exc_info)

            result = self._app(environ, recording_start_response)
            try:
                body = b"".join(result)  # read and close here, under the lock: closing touches the DB
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            self.calls.append(Callback(path, query, int(statuses[0].split()[0]) if statuses else 0))
            return [body]

    def db(self) -> contextlib.AbstractContextManager[Any]:
        """Hold this while the test thread uses the database (a no-op unless the connection is shared)."""
        return self._lock if self._shares_connection else contextlib.nullcontext()

    def hold(self) -> contextlib.AbstractContextManager[Any]:
        """Callbacks wait until this is released (on any database)."""
        return self._lock

    def open(self) -> None:
        with self._lock:
            self.calls.clear()
            self._open = True

    def shut(self) -> None:
        """Waits for a request in progress, then answers 503 to the rest."""
        with self._lock:
            self._open = False

    def restore(self) -> None:
        self.shut()
        self._httpd.set_app(self._app)
