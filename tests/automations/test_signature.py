"""The batch endpoint's authentication: the source's HMAC over the raw body, its timestamp
(replay window), and the previous secret during its grace period after a rotation."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from django.utils import timezone

from campaigns.automations import intake
from campaigns.automations.intake import signature_header_build
from campaigns.automations.models import CommerceEvent, EventSource
from campaigns.automations.services import event_source_secret_rotate
from smsplatform.kernel.actor import Actor
from tests.automations.conftest import event
from tests.support.rest import error_of

pytestmark = pytest.mark.django_db


def test_signed_batch_is_accepted(post: Any, contact: Any) -> None:
    response = post({"events": [event()]})
    assert response.status_code == 200
    assert response.json()["accepted"] == 1


def test_missing_signature_is_refused(post: Any, contact: Any) -> None:
    response = post({"events": [event()]}, signature="")
    assert response.status_code == 401
    assert error_of(response)["code"] == "signature_missing"
    assert not CommerceEvent.objects.exists()


@pytest.mark.parametrize(
    "header",
    ["garbage", "t=abc,v1=00", "v1=00ff", "t=123", "t=\u00b2\u00b3,v1=" + "a" * 64, "t=1,v1=" + "\u00e9" * 64],
)
def test_malformed_signature_is_refused(post: Any, contact: Any, header: str) -> None:
    response = post({"events": [event()]}, signature=header)
    assert response.status_code == 401
    assert error_of(response)["code"] in {"signature_invalid", "signature_expired"}
    assert not CommerceEvent.objects.exists()


def test_wrong_secret_is_refused(post: Any, contact: Any) -> None:
    response = post({"events": [event()]}, secret="not-the-secret")
    assert response.status_code == 401
    assert error_of(response)["code"] == "signature_invalid"
    assert not CommerceEvent.objects.exists()


def test_body_changed_after_signing_is_refused(post: Any, source: EventSource, contact: Any) -> None:
    signed = json.dumps({"events": [event()]}).encode()
    signature = signature_header_build(source.secret, signed)
    tampered = json.dumps({"events": [event(amount="1.00")]}).encode()
    response = post(None, raw=tampered, signature=signature)
    assert response.status_code == 401
    assert error_of(response)["code"] == "signature_invalid"


@pytest.fixture
def server_now(monkeypatch: pytest.MonkeyPatch) -> int:
    """The server's clock held on a whole second: a window test's timestamp is then exactly its
    offset from it, however long the request takes on a slow machine."""
    now = int(time.time())
    monkeypatch.setattr(intake, "time", SimpleNamespace(time=lambda: float(now)))
    return now


@pytest.mark.parametrize("offset", [-301, 301, -86_400])
def test_timestamp_outside_the_window_is_refused(post: Any, contact: Any, server_now: int, offset: int) -> None:
    response = post({"events": [event()]}, timestamp=server_now + offset)
    assert response.status_code == 401
    assert error_of(response)["code"] == "signature_expired"
    assert not CommerceEvent.objects.exists()


@pytest.mark.parametrize("offset", [-300, -250, 300])
def test_timestamp_inside_the_window_is_accepted(post: Any, contact: Any, server_now: int, offset: int) -> None:
    response = post({"events": [event()]}, timestamp=server_now + offset)
    assert response.status_code == 200


def test_replayed_request_stores_nothing_twice_and_is_refused_after_the_window(
    post: Any, source: EventSource, contact: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = json.dumps({"events": [event()]}).encode()
    signature = signature_header_build(source.secret, body)
    assert post(None, raw=body, signature=signature).json()["accepted"] == 1
    again = post(None, raw=body, signature=signature).json()
    assert again["accepted"] == 0 and again["duplicate"] == 1
    assert CommerceEvent.objects.count() == 1
    # The same captured request six minutes later.
    later = time.time() + 360
    monkeypatch.setattr(intake.time, "time", lambda: later)
    response = post(None, raw=body, signature=signature)
    assert response.status_code == 401
    assert error_of(response)["code"] == "signature_expired"


def test_unknown_or_disabled_source_is_refused(post: Any, source: EventSource, contact: Any) -> None:
    response = post({"events": [event()]}, source_code="nope")
    assert response.status_code == 401
    assert error_of(response)["code"] == "event_source_unknown"
    response = post({"events": [event()]}, source_code=None)
    assert response.status_code == 401
    assert error_of(response)["field"] == "X-Event-Source"
    EventSource.objects.filter(pk=source.pk).update(enabled=False)
    response = post({"events": [event()]})
    assert response.status_code == 401
    assert not CommerceEvent.objects.exists()


def test_another_sources_secret_is_refused(post: Any, source: EventSource, contact: Any) -> None:
    other = EventSource.objects.create(code="pos", name="POS")
    response = post({"events": [event()]}, secret=other.secret)
    assert response.status_code == 401


def test_rotated_secret_works_during_the_grace_then_not(post: Any, source: EventSource, contact: Any) -> None:
    old = source.secret
    rotated = event_source_secret_rotate(actor=Actor.system("test"), source_id=source.pk)
    assert rotated["secret"] != old
    assert post({"events": [event(event_id="a")]}, secret=old).status_code == 200
    assert post({"events": [event(event_id="b")]}, secret=rotated["secret"]).status_code == 200
    EventSource.objects.filter(pk=source.pk).update(secret_rotated_at=timezone.now() - timedelta(hours=49))
    response = post({"events": [event(event_id="c")]}, secret=old)
    assert response.status_code == 401
    assert post({"events": [event(event_id="d")]}, secret=rotated["secret"]).status_code == 200
    assert set(CommerceEvent.objects.values_list("event_id", flat=True)) == {"a", "b", "d"}


def test_a_second_rotation_drops_the_first_secret(post: Any, source: EventSource, contact: Any) -> None:
    first = source.secret
    event_source_secret_rotate(actor=Actor.system("test"), source_id=source.pk)
    event_source_secret_rotate(actor=Actor.system("test"), source_id=source.pk)
    assert post({"events": [event()]}, secret=first).status_code == 401


def test_no_bearer_token_is_needed_and_none_is_enough(client: Any, source: EventSource, contact: Any) -> None:
    """A DRF token or session does not replace the signature."""
    response = client.post(
        "/api/v1/events/batch",
        data={"events": [event()]},
        content_type="application/json",
        headers={"X-Event-Source": "shop", "Authorization": "Bearer whatever"},
    )
    assert response.status_code == 401
    assert error_of(response)["code"] == "signature_missing"
