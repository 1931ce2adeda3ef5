"""SMSC simulator: an SMPP 3.4 server (asyncio, no Django) for the platform's tests and benchmarks.

``python -m tests.support.smsc --help``; in Python, ``SmscServer`` (in an event loop), ``SmscThread``
(in a background thread) or ``SmscProcess`` (in a subprocess). The pytest fixture ``smsc`` is in
``tests/support/smsc_setup.py``.
"""

from tests.support.smsc.server import (
    DEFAULT_FAULTS,
    FAULT_KINDS,
    SmscConfig,
    SmscProcess,
    SmscServer,
    SmscThread,
    find_duplicates,
    read_log,
)

__all__ = [
    "DEFAULT_FAULTS",
    "FAULT_KINDS",
    "SmscConfig",
    "SmscProcess",
    "SmscServer",
    "SmscThread",
    "find_duplicates",
    "read_log",
]
