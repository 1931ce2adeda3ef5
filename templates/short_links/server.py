"""The short domain's server: gunicorn serving templates.short_links.wsgi.

One command line for every place that starts it: ``make run`` (runplatform), the benchmark
(bench/redirect_bench.py) and production (``python -m templates.short_links.server --bind ...``
runs exactly this command), so that what is measured is what is served.
"""

from __future__ import annotations

import argparse
import os
import sys

DEFAULT_BIND = "127.0.0.1:8001"


def default_workers() -> int:
    """SMS_SHORT_WORKERS, else two processes per core (each serves one request at a time)."""
    return int(os.environ.get("SMS_SHORT_WORKERS", "0")) or 2 * (os.cpu_count() or 1)


def gunicorn_command(
    bind: str = DEFAULT_BIND, *, workers: int | None = None, threads: int = 1, python: str = sys.executable
) -> list[str]:
    return [
        *(python, "-m", "gunicorn", "templates.short_links.wsgi:application", "--bind", bind),
        *("--workers", str(workers or default_workers()), "--worker-class", "gthread", "--threads", str(threads)),
        # Keep-alive: a phone that opens the link usually fetches nothing else from us, but
        # a reverse proxy in front reuses its connections.
        *("--keep-alive", "30", "--log-level", "warning"),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default=os.environ.get("SMS_SHORT_ADDR", DEFAULT_BIND))
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    command = gunicorn_command(args.bind, workers=args.workers, threads=args.threads)
    os.execv(command[0], command)  # noqa: S606 - our own fixed command line


if __name__ == "__main__":
    main()
