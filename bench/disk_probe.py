"""The storage's flush latency beside a bench, and the host's writeback settings.

A code's claim commits once its WAL is on disk (docs/OTP.md, "The priority lane"), so the WAL
device's flush latency under a campaign is part of every code's latency. ``DiskProbe`` measures it
from outside the database: a process of its own writes 8 KB and calls ``fdatasync`` every 10 ms
in a file it has written in full first and then overwrites in place, as PostgreSQL does its WAL
segments, so each flush is that data and no change of the file's size. Give it a directory on the
device the database's WAL is on (``bench/otp_latency.py --disk-probe DIR``: the database on this
host).

Usage (what ``DiskProbe`` runs): python bench/disk_probe.py DIRECTORY SAMPLES_FILE
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BLOCK = 8192
BLOCKS = 2048  # a 16 MB file, the size of a WAL segment
INTERVAL = 0.010
STALL_MS = 50.0


def probe(directory: Path, samples: Path) -> None:
    stop = False

    def on_signal(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    path = directory / f"disk-probe-{os.getpid()}.dat"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    taken: list[tuple[float, float]] = []
    try:
        os.write(fd, b"\0" * (BLOCK * BLOCKS))
        os.fsync(fd)
        block = b"p" * BLOCK
        n = 0
        while not stop:
            os.lseek(fd, (n % BLOCKS) * BLOCK, os.SEEK_SET)
            started = time.perf_counter()
            os.write(fd, block)
            os.fdatasync(fd)
            taken.append((time.time(), (time.perf_counter() - started) * 1000))
            n += 1
            time.sleep(INTERVAL)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
        samples.write_text("".join(f"{at:.3f} {ms:.3f}\n" for at, ms in taken), encoding="utf-8")


class DiskProbe:
    """``bench/disk_probe.py`` as a process of its own, from ``start()`` to ``stop()``; then
    ``summary(start, end)`` describes the flushes between two ``time.time()`` values."""

    def __init__(self, directory: str, samples: Path) -> None:
        self.directory = directory
        self.samples_file = samples
        self.process: subprocess.Popen[bytes] | None = None
        self.samples: list[tuple[float, float]] = []

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), self.directory, str(self.samples_file)]
        )

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        self.process = None
        text = self.samples_file.read_text(encoding="utf-8") if self.samples_file.exists() else ""
        self.samples = [(float(at), float(ms)) for at, ms in (line.split() for line in text.splitlines())]

    def summary(self, start: float, end: float) -> str:
        from smpp_bench import percentile  # bench/ is on sys.path when a bench runs

        taken = sorted(ms for at, ms in self.samples if start <= at <= end)
        if not taken:
            return "no samples"
        stalls = [ms for ms in taken if ms > STALL_MS]
        return (
            f"{len(taken):,} flushes, p50 {percentile(taken, 50):.1f} ms, p99 {percentile(taken, 99):.1f} ms, max {taken[-1]:.1f} ms; "
            f"{len(stalls)} over {STALL_MS:.0f} ms ({sum(stalls) / 1000:.2f} s in them, "
            f"{sum(stalls) / 10 / max(end - start, 1e-6):.1f} % of the phase)"
        )


def host_writeback(directory: str | None = None) -> str:
    """The kernel's writeback settings (Linux), and the I/O scheduler of ``directory``'s device:
    when the page cache's dirty data is written out, and so what a flush may queue behind."""
    vm = Path("/proc/sys/vm")
    try:
        values = {name: int((vm / name).read_text()) for name in DIRTY_SETTINGS}
    except (OSError, ValueError):
        return "unknown (not Linux)"
    background = (
        f"{values['dirty_background_bytes'] / 2**20:.0f} MB"
        if values["dirty_background_bytes"]
        else f"{values['dirty_background_ratio']} %"
    )
    limit = f"{values['dirty_bytes'] / 2**20:.0f} MB" if values["dirty_bytes"] else f"{values['dirty_ratio']} %"
    line = (
        f"dirty data written out after {values['dirty_expire_centisecs'] / 100:g} s "
        f"(vm.dirty_expire_centisecs), or beyond {background} of memory; writers wait beyond {limit}"
    )
    scheduler = device_scheduler(directory) if directory else None
    return f"{line}; I/O scheduler {scheduler}" if scheduler else line


DIRTY_SETTINGS = (
    "dirty_expire_centisecs",
    "dirty_background_bytes",
    "dirty_background_ratio",
    "dirty_bytes",
    "dirty_ratio",
)


def device_scheduler(directory: str) -> str | None:
    try:
        device = os.stat(directory).st_dev
        block = Path(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}").resolve()
        for candidate in (block, block.parent):  # a partition's queue is its disk's
            queue = candidate / "queue" / "scheduler"
            if queue.exists():
                text = queue.read_text().strip()
                chosen = text[text.find("[") + 1 : text.find("]")] if "[" in text else text
                return f"{chosen} ({candidate.name})"
    except OSError:
        return None
    return None


if __name__ == "__main__":
    probe(Path(sys.argv[1]), Path(sys.argv[2]))
