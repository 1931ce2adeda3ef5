"""REST views of the platform kernel: configuration versions, health.

The configuration's own endpoint (GET and the governed PATCH) is ConfigApi in
gateways/api/views.py, beside the write it calls (the kernel imports no app)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from smsplatform.api.base import ServiceApiView
from smsplatform.config_service import platform_config_versions


def governed_response(result: dict[str, Any]) -> Response:
    """200 when executed, 202 when held for approval."""
    code = status.HTTP_202_ACCEPTED if result.get("status") == "pending_approval" else status.HTTP_200_OK
    return Response(result, status=code)


class ConfigVersionsApi(ServiceApiView):
    required_permissions = {"GET": "smsplatform.view_platformconfig"}

    @extend_schema(operation_id="config_versions", summary="Configuration version history")
    def get(self, request: Request) -> Response:
        return Response({"versions": platform_config_versions()})


class HealthApi(APIView):
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(operation_id="health", summary="Liveness and database check")
    def get(self, request: Request) -> Response:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return Response({"status": "ok"})
