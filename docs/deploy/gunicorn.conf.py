"""gunicorn settings for the platform's web tier (``gunicorn smsplatform.wsgi -c docs/deploy/gunicorn.conf.py``)."""

import os

bind = os.environ.get("SMS_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
worker_class = "gthread"
threads = int(os.environ.get("SMS_WEB_THREADS", "8"))
# Long enough for the largest synchronous reads (a 1M-recipient segment preview); dispatch and
# imports run in Celery, not in a request.
timeout = 60
graceful_timeout = 30
keepalive = 5
# Logs go to stdout as the platform formats them (JSON lines in production).
accesslog = "-"
access_log_format = (
    '{"ts":"%(t)s","request_id":"%({x-request-id}o)s","status":%(s)s,"method":"%(m)s","path":"%(U)s","ms":%(M)s}'
)


def child_exit(server: object, worker: object) -> None:
    """Prometheus multiprocess mode: a dead worker's live gauges are dropped."""
    from smsplatform.operations.metrics import process_exit

    process_exit(worker.pid)  # type: ignore[attr-defined]
