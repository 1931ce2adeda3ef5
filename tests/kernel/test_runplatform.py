"""make run (manage.py runplatform): Ctrl-C or SIGTERM stops web, short links, worker and beat and
exits 0 with a clean message; a child that dies by itself is reported and exits non-zero."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from smsplatform.management.commands.runplatform import stop_failures

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def embedded_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The embedded default (SQLite under its own var/, the filesystem broker), migrated once."""
    var = tmp_path_factory.mktemp("runplatform") / "var"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env |= {"DJANGO_SETTINGS_MODULE": "smsplatform.settings", "SMS_VAR_DIR": str(var), "LOG_LEVEL": "INFO"}
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=300
    )
    return env


def _start(env: dict[str, str], tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path, Path, int, int]:
    web, short = _free_port(), _free_port()
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "runplatform",
            "--addr",
            f"127.0.0.1:{web}",
            "--short-addr",
            f"127.0.0.1:{short}",
        ],
        cwd=ROOT,
        env=env,
        stdout=out.open("wb"),
        stderr=err.open("wb"),
        start_new_session=True,  # its own process group, as a terminal's foreground job has
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, err.read_text()
        if _listening(web) and _listening(short) and " ready." in err.read_text(errors="replace"):
            return proc, out, err, web, short
        time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"runplatform did not come up: {err.read_text()}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_stops_everything_and_exits_0(
    embedded_env: dict[str, str], tmp_path: Path, signum: signal.Signals
) -> None:
    proc, out, err, web, short = _start(embedded_env, tmp_path)
    # Ctrl-C: the terminal signals the whole foreground process group; a service manager sends
    # SIGTERM to the main process.
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    assert proc.wait(timeout=60) == 0, err.read_text()
    stdout, stderr = out.read_text(), err.read_text(errors="replace")
    assert f"{signum.name} received: stopping" in stdout and stdout.rstrip().endswith("Stopped cleanly.")
    assert "exited with an error" not in stderr and "Stopped:" not in stderr, stderr
    assert "Traceback" not in stderr, stderr
    assert not _listening(web) and not _listening(short)  # no child left behind


def test_stop_failures_in_words() -> None:
    def proc(code: int) -> Any:
        return type("P", (), {"returncode": code})()

    clean = {"web": proc(-signal.SIGTERM), "worker+beat": proc(0), "short": proc(143)}
    assert stop_failures(clean, {}, requested=True) == []
    assert stop_failures({"worker+beat": proc(1)}, {}, requested=True) == [
        "worker+beat exited with code 1 while stopping"
    ]
    assert stop_failures({"web": proc(-signal.SIGKILL)}, {}, requested=True) == [
        "web did not stop within 20s and was killed"
    ]
    # A child that died by itself (a port in use, say) is an error even with code 0.
    assert stop_failures({"web": proc(0), "short": proc(-signal.SIGTERM)}, {"web": 0}, requested=False) == [
        "web exited on its own with code 0"
    ]
