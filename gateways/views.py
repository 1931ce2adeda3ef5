"""Provider callbacks: delivery receipts and inbound SMS. Forged or malformed ones are refused."""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from gateways.adapters.base import CallbackRejected, adapter_for
from gateways.delivery.inbound import inbound_receive
from gateways.delivery.receipts import receipts_ingest
from gateways.models import Gateway

logger = logging.getLogger(__name__)


def _reject(exc: CallbackRejected) -> JsonResponse:
    return JsonResponse(
        {"error": {"code": exc.code, "message": exc.message, "field": None, "hint": None}}, status=exc.status
    )


@csrf_exempt
@require_http_methods(["GET", "POST"])
def receipt_callback(request: HttpRequest, gateway_code: str) -> HttpResponse:
    gateway = Gateway.objects.filter(code=gateway_code, enabled=True).first()
    if gateway is None:
        return _reject(CallbackRejected(404, "not_found", "Unknown gateway."))
    try:
        events = adapter_for(gateway).parse_receipts(request)
    except CallbackRejected as exc:
        logger.warning("receipt callback for %s refused: %s", gateway_code, exc.message)
        return _reject(exc)
    result = receipts_ingest(gateway=gateway, events=events)
    return adapter_for(gateway).callback_response("receipts", result)


@csrf_exempt
@require_http_methods(["GET", "POST"])
def inbound_callback(request: HttpRequest, gateway_code: str) -> HttpResponse:
    gateway = Gateway.objects.filter(code=gateway_code, enabled=True).first()
    if gateway is None:
        return _reject(CallbackRejected(404, "not_found", "Unknown gateway."))
    try:
        events = adapter_for(gateway).parse_inbound(request)
    except CallbackRejected as exc:
        logger.warning("inbound callback for %s refused: %s", gateway_code, exc.message)
        return _reject(exc)
    stored = inbound_receive(gateway=gateway, events=events)
    return adapter_for(gateway).callback_response("inbound", {"received": len(events), "stored": len(stored)})
