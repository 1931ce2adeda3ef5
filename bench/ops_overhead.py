"""What metrics and structured logging cost: the campaign send benchmark and the MCP latency
benchmark, each run with them off (SMS_METRICS=0, LOG_FORMAT=bare: the standard library's handler,
no request context, no masking) and on (SMS_METRICS=1 with PROMETHEUS_MULTIPROC_DIR as in
production, LOG_FORMAT=json), alternating off/on so drift in the machine's load hits both.

Usage: python bench/ops_overhead.py [--recipients 200000] [--rounds 2] [--database-url URL]
Target (issue 20): on adds at most 5% to either figure. Without PostgreSQL it says so and exits 0.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = {
    "off": {"SMS_METRICS": "0", "LOG_FORMAT": "bare"},
    "on": {"SMS_METRICS": "1", "LOG_FORMAT": "json"},
}


def run(script: list[str], mode: str) -> str:
    env = {**os.environ, **MODES[mode]}
    if mode == "on":
        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="smsmetrics-")
    else:
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    done = subprocess.run([sys.executable, *script], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{script[0]} ({mode}) failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", ""))
    args = parser.parse_args()
    db = ["--database-url", args.database_url] if args.database_url else []
    send: dict[str, list[float]] = {"off": [], "on": []}
    mcp: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(args.rounds):
        for mode in ("off", "on"):
            out = run(["bench/campaign_bench.py", "--recipients", str(args.recipients), *db], mode)
            if "skipped" in out and "end to end" not in out:
                print(out.strip())
                return
            rate = re.search(r"= ([\d,]+) msg/s", out)
            if rate:
                send[mode].append(float(rate.group(1).replace(",", "")))
            out = run(["bench/mcp_latency.py", "--requests", "1000", "--sequential", "300", *db], mode)
            p50 = re.search(r"mcp config\.get x1\s+p50\s+([\d.]+) ms", out)
            if p50:
                mcp[mode].append(float(p50.group(1)))
            print(f"{mode}: send {send[mode][-1:]} msg/s, MCP p50 {mcp[mode][-1:]} ms", flush=True)
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"# metrics and JSON logging on vs off, {args.rounds} rounds, load average {' '.join(load)}")
    s_off, s_on = statistics.median(send["off"]), statistics.median(send["on"])
    m_off, m_on = statistics.median(mcp["off"]), statistics.median(mcp["on"])
    print(
        f"campaign send ({args.recipients:,}): off {s_off:,.0f} msg/s, on {s_on:,.0f} msg/s: {100 * (s_off - s_on) / s_off:+.1f}% cost"
    )
    print(
        f"MCP config.get p50: off {m_off:.2f} ms, on {m_on:.2f} ms: {100 * (m_on - m_off) / m_off:+.1f}% cost (target <= 5%)"
    )


if __name__ == "__main__":
    main()
