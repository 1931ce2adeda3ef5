"""Logging: one context (request id, actor, channel, task) that follows a request into the Celery
tasks it starts, JSON lines in production and plain lines on the embedded default, and a filter
that masks every phone number before a line leaves the process.

No code path logs an OTP code (codes exist only in the sending step and as a keyed hash); the
phone filter is the net under every other line: a number in a message, an argument or an
exception's text is masked the same way as in the admin (``+852****5678``)."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
actor_var: contextvars.ContextVar[str] = contextvars.ContextVar("actor", default="")
channel_var: contextvars.ContextVar[str] = contextvars.ContextVar("channel", default="")
task_var: contextvars.ContextVar[str] = contextvars.ContextVar("task", default="")

# The header a request id arrives in (from a proxy) and is answered in; also the Celery message
# header that carries it into tasks.
REQUEST_ID_HEADER = "X-Request-ID"
CELERY_HEADER = "sms_request_id"
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

# An E.164 number or a national one: 8 to 15 digits, optionally after a "+", allowing the spaces
# and dashes people type; not inside a longer run of digits or letters (ids, hashes, timestamps).
_PHONE = re.compile(r"(?<![\w+])\+?\d(?:[ -]?\d){7,14}(?!\w)")


def phone_mask_text(text: str) -> str:
    """Every phone-like number in ``text`` masked: its country code or first digits and its last
    four kept, the rest starred."""

    def mask(match: re.Match[str]) -> str:
        raw = match.group(0)
        digits = re.sub(r"\D", "", raw)
        plus = "+" if raw.startswith("+") else ""
        keep = 3 if plus else 0
        return plus + digits[:keep] + "*" * (len(digits) - keep - 4) + digits[-4:]

    return _PHONE.sub(mask, text)


def request_id_new() -> str:
    return uuid.uuid4().hex


def request_id_accept(value: str | None) -> str:
    """A caller's request id if it is a sane token, else a new one (never a log injection)."""
    return value if value and _REQUEST_ID_OK.match(value) else request_id_new()


def context_set(*, request_id: str | None = None, actor: str | None = None, channel: str | None = None) -> None:
    if request_id is not None:
        request_id_var.set(request_id)
    if actor is not None:
        actor_var.set(actor)
    if channel is not None:
        channel_var.set(channel)


def context_clear() -> None:
    for var in (request_id_var, actor_var, channel_var, task_var):
        var.set("")


class ContextFilter(logging.Filter):
    """Adds the context to every record and masks phone numbers in its message and exception."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.actor = actor_var.get()
        record.channel = channel_var.get()
        record.task = task_var.get()
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep the raw message, masked
            message = str(record.msg)
        masked = phone_mask_text(message)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = phone_mask_text(record.exc_text)
            record.exc_info = None  # formatted once, masked; never re-rendered unmasked
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the context."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("request_id", "actor", "channel", "task"):
            value = getattr(record, key, "")
            if value:
                line[key] = value
        if record.exc_text:
            line["exception"] = record.exc_text
        elif record.exc_info:
            line["exception"] = phone_mask_text(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False)


class PlainFormatter(logging.Formatter):
    """Readable lines for a terminal, with the request id when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s%(ctx)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        parts = [getattr(record, k, "") for k in ("request_id", "actor", "task")]
        shown = " ".join(p for p in parts if p)
        record.ctx = f" [{shown}]" if shown else ""
        return super().format(record)


class RequestIdMiddleware:
    """Gives every request an id (the proxy's ``X-Request-ID`` if sane), answers it in the same
    header, and sets the log context; the actor is added when a view builds it."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        request_id = request_id_accept(request.META.get("HTTP_X_REQUEST_ID"))
        request.request_id = request_id
        tokens = (request_id_var.set(request_id), actor_var.set(""), channel_var.set(""))
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(tokens[0])
            actor_var.reset(tokens[1])
            channel_var.reset(tokens[2])
        response[REQUEST_ID_HEADER] = request_id
        return response


def celery_signals_connect() -> None:
    """The request id (and actor, channel) travel with every task published while it is set, and
    are the log context while the task runs."""
    from celery.signals import before_task_publish, task_postrun, task_prerun

    def publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
        if headers is not None and request_id_var.get():
            headers[CELERY_HEADER] = {
                "request_id": request_id_var.get(),
                "actor": actor_var.get(),
                "channel": channel_var.get(),
            }

    def prerun(task: Any = None, **_: Any) -> None:
        carried = getattr(getattr(task, "request", None), CELERY_HEADER, None) or {}
        if not isinstance(carried, dict):
            carried = {}
        request_id_var.set(request_id_accept(carried.get("request_id")))
        actor_var.set(str(carried.get("actor", ""))[:200])
        channel_var.set(str(carried.get("channel", ""))[:20])
        task_var.set(getattr(task, "name", "") or "")

    def postrun(**_: Any) -> None:
        context_clear()

    before_task_publish.connect(publish, weak=False, dispatch_uid="sms_log_publish")
    task_prerun.connect(prerun, weak=False, dispatch_uid="sms_log_prerun")
    task_postrun.connect(postrun, weak=False, dispatch_uid="sms_log_postrun")


def logging_config(*, fmt: str, level: str) -> dict[str, Any]:
    """The LOGGING setting: ``fmt`` is "json" (production) or "plain" (embedded default); "bare"
    is the standard library's handler without context or masking (only for the overhead bench)."""
    formatter = "json" if fmt == "json" else "plain"
    if fmt == "bare":
        return {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"console": {"class": "logging.StreamHandler"}},
            "root": {"handlers": ["console"], "level": level},
            "loggers": {"mcp": {"level": "WARNING"}, "mcp_server": {"level": "WARNING"}},
        }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "smsplatform.operations.logs.ContextFilter"}},
        "formatters": {
            "json": {"()": "smsplatform.operations.logs.JsonFormatter"},
            "plain": {"()": "smsplatform.operations.logs.PlainFormatter"},
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": formatter, "filters": ["context"]}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # The MCP SDK logs every request at INFO; keep it quieter.
            "mcp": {"level": "WARNING"},
            "mcp_server": {"level": "WARNING"},
        },
    }
