"""REST intake of commerce events. Thin: read the raw body, authenticate the source by its
signature, parse, call ``events_ingest``, serialise. No bearer token: the source's HMAC is the
authentication (campaigns.automations.intake)."""

from __future__ import annotations

import json
import math
from typing import Any

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from campaigns.automations.errors import AutomationErrorCode
from campaigns.automations.intake import (
    MAX_EVENTS,
    SIGNATURE_HEADER,
    SOURCE_HEADER,
    event_source_authenticate,
    events_ingest,
)
from smsplatform.api.parsers import json_depth_check
from smsplatform.kernel.errors import ApplicationError, ErrorCode

# Statuses of the endpoint's own codes (the kernel's map has the shared ones).
_STATUS = {
    AutomationErrorCode.EVENT_SOURCE_UNKNOWN: 401,
    AutomationErrorCode.SIGNATURE_MISSING: 401,
    AutomationErrorCode.SIGNATURE_INVALID: 401,
    AutomationErrorCode.SIGNATURE_EXPIRED: 401,
    AutomationErrorCode.EVENT_BATCH_TOO_LARGE: 413,
}


def _error_response(exc: ApplicationError) -> Response:
    return Response({"error": exc.as_dict()}, status=_STATUS.get(exc.code, exc.http_status))  # type: ignore[call-overload]


def _body(request: Request) -> bytes:
    """The raw body, read without Django's form-sized limit (a batch of 1,000 events may pass
    it) but within SMS_EVENTS_MAX_BODY_BYTES."""
    limit = settings.SMS_EVENTS_MAX_BODY_BYTES
    django_request = request._request
    try:
        declared = int(django_request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise ApplicationError(
            AutomationErrorCode.EVENT_BATCH_TOO_LARGE,
            f"The request body is larger than {limit:,} bytes. Nothing was stored.",
            hint=f"Send at most {MAX_EVENTS:,} events per batch, with smaller payloads.",
        )
    body = django_request.read(limit + 1)
    if len(body) > limit:
        raise ApplicationError(
            AutomationErrorCode.EVENT_BATCH_TOO_LARGE,
            f"The request body is larger than {limit:,} bytes. Nothing was stored.",
            hint=f"Send at most {MAX_EVENTS:,} events per batch, with smaller payloads.",
        )
    return body


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError("out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _events(body: bytes) -> Any:
    """The body's events. NaN, Infinity and numbers beyond a float are refused here: PostgreSQL's
    JSON has no such values (they would fail the batch's insert)."""
    try:
        data = json.loads(body, parse_float=_finite, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise ApplicationError(
            ErrorCode.MALFORMED_REQUEST, "The request body is not valid JSON.", hint='Send {"events": [...]}.'
        ) from None
    json_depth_check(data)
    if not isinstance(data, dict) or set(data) != {"events"}:
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            'The body is an object with one field, "events".',
            field="events",
            hint='Send {"events": [{"event_id": ..., "type": ..., "occurred_at": ..., "phone": ...}, ...]}.',
        )
    return data["events"]


class EventBatchApi(APIView):
    """POST a batch of up to 1,000 events, signed by their source."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []

    @extend_schema(
        operation_id="events_batch_ingest",
        summary="Send a batch of commerce events (signed by the event source)",
        description=(
            f"Up to {MAX_EVENTS:,} events. Headers: {SOURCE_HEADER}: <source code>, {SIGNATURE_HEADER}: "
            't=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>, t within 5 minutes. '
            "Each event is answered accepted, duplicate (same source and event_id stored; payload_differs "
            "says whether its content changed) or refused {reason, field, message}; accepted events are "
            "written together or not at all."
        ),
        parameters=[
            OpenApiParameter(SOURCE_HEADER, OpenApiTypes.STR, OpenApiParameter.HEADER, required=True),
            OpenApiParameter(SIGNATURE_HEADER, OpenApiTypes.STR, OpenApiParameter.HEADER, required=True),
        ],
        request=OpenApiTypes.OBJECT,
        responses={
            200: OpenApiTypes.OBJECT,
            400: OpenApiTypes.OBJECT,
            401: OpenApiTypes.OBJECT,
            413: OpenApiTypes.OBJECT,
        },
        auth=[],
    )
    def post(self, request: Request) -> Response:
        try:
            body = _body(request)
            source = event_source_authenticate(
                source_code=request.headers.get(SOURCE_HEADER),
                signature=request.headers.get(SIGNATURE_HEADER),
                body=body,
            )
            result = events_ingest(source=source, events=_events(body))
        except ApplicationError as exc:
            return _error_response(exc)
        return Response(result)
