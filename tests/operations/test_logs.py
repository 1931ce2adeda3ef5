"""Log lines: JSON in production, a request id that follows a request into its tasks, the actor
and channel, and no phone number in full anywhere."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from django.test import Client

from smsplatform.operations import logs
from smsplatform.operations.logs import (
    CELERY_HEADER,
    ContextFilter,
    JsonFormatter,
    PlainFormatter,
    context_clear,
    context_set,
    phone_mask_text,
)


def record(message: str, *args: Any, exc: BaseException | None = None) -> Any:
    exc_info = (type(exc), exc, exc.__traceback__) if exc else None
    rec = logging.LogRecord("sms.test", logging.WARNING, __file__, 1, message, args or None, exc_info)
    ContextFilter().filter(rec)
    return rec


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("to +85251234567 now", "to +852****4567 now"),
        ("to 5123 4567 and +44 7700 900123", "to ****4567 and +447*****0123"),
        ("Contact 98765432.", "Contact ****5432."),
        ("order 2026120612 shipped", "order ******0612 shipped"),
    ],
)
def test_phone_numbers_are_masked(text: str, expected: str) -> None:
    assert phone_mask_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "message #1234567 claimed",
        "hash 3f2a9b8c7d6e5f40aabbccdd",
        "uuid 5f1c2d3e4b5a69788f9e0d1c2b3a4958",
        "at 12:30:45",
    ],
)
def test_ids_hashes_and_short_numbers_are_left_alone(text: str) -> None:
    assert phone_mask_text(text) == text


def test_a_json_line_carries_the_context_and_masks_arguments_and_exceptions() -> None:
    context_set(request_id="req-1", actor="alice via api [agent]", channel="api")
    try:
        try:
            raise ValueError("could not send to +85291234567")
        except ValueError as exc:
            rec = record("send to %s failed", "+85261234567", exc=exc)
        line = json.loads(JsonFormatter().format(rec))
    finally:
        context_clear()
    assert line["message"] == "send to +852****4567 failed"
    assert line["request_id"] == "req-1" and line["actor"] == "alice via api [agent]" and line["channel"] == "api"
    assert "+852****4567" in line["exception"] and "91234567" not in json.dumps(line)
    assert line["level"] == "WARNING" and line["logger"] == "sms.test" and line["ts"].endswith("+00:00")


def test_plain_lines_are_readable() -> None:
    context_set(request_id="abc123")
    try:
        text = PlainFormatter().format(record("queued %d messages for %s", 3, "+85251234567"))
    finally:
        context_clear()
    assert text.endswith("WARNING sms.test [abc123] queued 3 messages for +852****4567")


def test_every_request_gets_an_id_and_a_sane_caller_id_is_kept(client: Client, db: Any) -> None:
    generated = client.get("/healthz")["X-Request-ID"]
    assert len(generated) == 32
    assert client.get("/healthz", HTTP_X_REQUEST_ID="lb-7f3a")["X-Request-ID"] == "lb-7f3a"
    injected = client.get("/healthz", HTTP_X_REQUEST_ID="x\n{fake json}")["X-Request-ID"]
    assert injected != "x\n{fake json}" and len(injected) == 32


def test_the_request_id_and_actor_follow_into_a_task() -> None:
    """What Celery's signals do: the publisher's context goes in a message header, the worker's
    prerun makes it the log context of the task, postrun clears it."""
    from celery.signals import before_task_publish, task_postrun, task_prerun

    logs.celery_signals_connect()
    headers: dict[str, Any] = {}
    context_set(request_id="req-42", actor="bob via mcp", channel="mcp")
    before_task_publish.send(sender="campaigns.dispatch", headers=headers, body=None)
    context_clear()
    assert headers[CELERY_HEADER] == {"request_id": "req-42", "actor": "bob via mcp", "channel": "mcp"}

    class Request:
        pass

    class Task:
        name = "campaigns.dispatch"
        request = Request()

    setattr(Task.request, CELERY_HEADER, headers[CELERY_HEADER])
    task_prerun.send(sender=Task, task_id="t1", task=Task, args=(), kwargs={})
    rec = record("dispatched")
    assert (rec.request_id, rec.actor, rec.channel, rec.task) == ("req-42", "bob via mcp", "mcp", "campaigns.dispatch")
    task_postrun.send(sender=Task, task_id="t1", task=Task)
    assert record("after").request_id == ""

    # A task queued by beat (no context) still gets an id of its own.
    setattr(Task.request, CELERY_HEADER, None)
    task_prerun.send(sender=Task, task_id="t2", task=Task, args=(), kwargs={})
    assert len(record("beat task").request_id) == 32
    task_postrun.send(sender=Task, task_id="t2", task=Task)


def test_building_a_request_actor_names_it_in_the_log_context(django_user_model: Any, db: Any) -> None:
    from django.test import RequestFactory

    from smsplatform.kernel.actor import Actor, Channel

    user = django_user_model.objects.create_user("carol")
    request = RequestFactory().get("/api/v1/config/")
    request.user = user

    class Token:
        name = "campaign-agent"

    request.auth = Token()  # type: ignore[attr-defined]
    try:
        Actor.for_request(request, Channel.MCP)
        rec = record("tool called")
    finally:
        context_clear()
    assert (rec.actor, rec.channel) == ("carol via mcp [campaign-agent]", "mcp")
