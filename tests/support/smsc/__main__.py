"""``python -m tests.support.smsc --port 2775 --log /tmp/smsc.jsonl ...``: run the SMSC simulator.

Prints one JSON line ``{"event": "listening", "host", "port", "run"}`` on stdout once it listens,
and its counters on stderr when it stops (SIGINT/SIGTERM, or ``stop`` on the control channel).

``--control-stdin``: JSON-line commands on stdin, one JSON-line reply each on stdout --
``{"cmd": "flush"}``, ``{"cmd": "stats"}``, ``{"cmd": "records"}``,
``{"cmd": "mo", "source", "destination", "text", "data_coding"?, "system_id"?, "wait"?, "timeout_s"?}``,
``{"cmd": "stop"}``; end of stdin stops the simulator too (it dies with its parent).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from typing import Any

from tests.support.smsc.server import DEFAULT_FAULTS, FAULT_KINDS, SmscConfig, SmscServer


def _pair(value: str, sep: str) -> tuple[str, str]:
    if sep not in value:
        raise argparse.ArgumentTypeError(f"expected A{sep}B, got {value!r}")
    left, right = value.split(sep, 1)
    return left, right


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.support.smsc", description="SMPP 3.4 SMSC simulator")
    parser.add_argument("--config", help="SmscConfig fields as a JSON object (flags below override it)")
    parser.add_argument("--host", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default 2775; 0 = any free port)")
    parser.add_argument("--log", dest="log_path", help="JSON-lines log of every submit_sm (appended)")
    parser.add_argument(
        "--credential",
        action="append",
        type=lambda v: _pair(v, ":"),
        metavar="SYSTEM_ID:PASSWORD",
        help="accepted bind credentials (repeatable; default smppclient1:password)",
    )
    parser.add_argument("--any-credentials", action="store_true", help="accept every system_id/password")
    parser.add_argument("--receipt-delay-ms", metavar="MIN[,MAX]", help="receipt delay range in ms (default 0,50)")
    parser.add_argument("--receipt-before-resp-ratio", type=float, help="share of receipts sent before the resp")
    parser.add_argument("--max-rate", type=float, dest="max_rate_per_second", help="global submit_sm/s limit")
    parser.add_argument("--throttle-first-n", type=int, help="throttled submits per destination (fault prefix)")
    parser.add_argument(
        "--fault",
        action="append",
        type=lambda v: _pair(v, "="),
        metavar="PREFIX=KIND",
        help=f"fault by destination prefix (repeatable; kinds: {', '.join(FAULT_KINDS)})",
    )
    parser.add_argument("--no-default-faults", action="store_true", help=f"drop the defaults {DEFAULT_FAULTS}")
    parser.add_argument("--message-id-format", choices=("hex", "decimal"))
    parser.add_argument("--seed", type=int)
    parser.add_argument("--flush-interval", type=float, dest="log_flush_interval")
    parser.add_argument("--control-stdin", action="store_true", help="JSON-line control commands on stdin")
    parser.add_argument("--stats-interval", type=float, default=0.0, help="print counters to stderr every N s")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> SmscConfig:
    values: dict[str, Any] = json.loads(args.config) if args.config else {}
    for name in (
        "host",
        "port",
        "log_path",
        "receipt_before_resp_ratio",
        "max_rate_per_second",
        "throttle_first_n",
        "message_id_format",
        "seed",
        "log_flush_interval",
    ):
        value = getattr(args, name)
        if value is not None:
            values[name] = value
    if args.credential:
        values["credentials"] = dict(args.credential)
    if args.any_credentials:
        values["credentials"] = {}
    if args.receipt_delay_ms:
        bounds = [float(x) / 1000 for x in args.receipt_delay_ms.split(",")]
        values["receipt_delay"] = (bounds[0], bounds[-1])
    faults = {} if args.no_default_faults else dict(values.get("faults", DEFAULT_FAULTS))
    if args.fault:
        faults.update(dict(args.fault))
    values["faults"] = faults
    return SmscConfig.from_dict(values)


def emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
    sys.stdout.flush()


async def control(server: SmscServer, stop: asyncio.Event, final: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while not stop.is_set():
        line = await reader.readline()
        if not line:
            break
        try:
            request = json.loads(line)
            cmd = request.get("cmd")
            if cmd == "flush":
                emit({"ok": True, "flushed": server.flush_log()})
            elif cmd == "stats":
                emit({"ok": True, "stats": server.stats()})
            elif cmd == "records":
                emit({"ok": True, "records": list(server.records)})
            elif cmd == "mo":
                future = server.inject_mo(
                    request["source"],
                    request["destination"],
                    request["text"],
                    data_coding=request.get("data_coding"),
                    system_id=request.get("system_id") or "",
                )
                statuses: list[int] = []
                if request.get("wait", True):
                    statuses = await asyncio.wait_for(asyncio.shield(future), float(request.get("timeout_s", 10)))
                emit({"ok": True, "statuses": statuses})
            elif cmd == "stop":
                await server.stop()
                final["stats"] = server.stats()
                emit({"ok": True, "stats": final["stats"]})
                break
            else:
                emit({"ok": False, "error": f"unknown command {cmd!r}"})
        except Exception as exc:
            emit({"ok": False, "error": repr(exc)})
    stop.set()


async def main_async(config: SmscConfig, args: argparse.Namespace) -> dict[str, Any]:
    server = SmscServer(config)
    await server.start()
    emit({"event": "listening", "host": server.host, "port": server.port, "run": server.run_id})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    final: dict[str, Any] = {}
    tasks = []
    if args.control_stdin:
        tasks.append(asyncio.create_task(control(server, stop, final)))
    if args.stats_interval > 0:

        async def report() -> None:
            while True:
                await asyncio.sleep(args.stats_interval)
                print(json.dumps(server.stats()), file=sys.stderr, flush=True)

        tasks.append(asyncio.create_task(report()))
    await stop.wait()
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await server.stop()
    return final.get("stats") or server.stats()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = build_config(args)
    except (ValueError, TypeError) as exc:
        print(f"smsc: {exc}", file=sys.stderr)
        return 2
    stats = asyncio.run(main_async(config, args))
    print(json.dumps({"event": "stopped", "stats": stats}), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
