"""The SMSC simulator as the tests run it (the fixtures ``smsc`` and ``smsc_factory`` are in
tests/conftest.py).

``smsc``: a simulator on a free loopback port (its own event loop in a background thread), with
the default faults, credentials ``SYSTEM_ID``/``PASSWORD``, receipts after 0-50 ms and a JSON-lines
log in the test's tmp dir. ``smsc_factory(mode="thread"|"process", **SmscConfig fields)`` starts
more, or other configurations (``mode="process"`` runs ``python -m tests.support.smsc`` in a subprocess:
its own core, for throughput). Every one started is stopped in teardown.

The object yielded (``SmscThread`` or ``SmscProcess``, same API):
``.host``, ``.port``, ``.system_id``, ``.password``, ``.log_path``, ``.config``,
``.submitted()`` (this run's submit_sm records from the log, flushed first), ``.stats()``,
``.inject_mo(source, destination, text, data_coding=None, system_id="", wait=True, timeout=10.0)``
(returns each part's deliver_sm_resp status), ``.flush()``, ``.stop()``; a thread one also has
``.server`` (the ``SmscServer``) and ``.call(fn)`` (run ``fn`` in its loop).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.smsc import SmscConfig, SmscProcess, SmscThread

SYSTEM_ID, PASSWORD = "platform", "sim-pass"  # SMPP 3.4: system_id <= 15, password <= 8 characters

Smsc = SmscThread | SmscProcess


def smsc_config(tmp_path: Path, name: str = "smsc", **overrides: Any) -> SmscConfig:
    config = SmscConfig(
        host="127.0.0.1",
        port=0,
        credentials={SYSTEM_ID: PASSWORD},
        log_path=str(tmp_path / f"{name}.jsonl"),
        log_flush_interval=0.05,
        seed=1234,
    )
    return dataclasses.replace(config, **overrides) if overrides else config


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it is truthy (returns its value) or ``timeout`` passes (returns the last)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()
