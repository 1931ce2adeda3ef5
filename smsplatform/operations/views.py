"""``/healthz`` (the process answers) and ``/readyz`` (every readiness check; 503 when one fails),
unauthenticated for load balancers and orchestrators: the body names what is wrong, never a secret."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from smsplatform.operations.health import readiness


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    report = readiness()
    return JsonResponse(report, status=200 if report["ready"] else 503)
