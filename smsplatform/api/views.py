"""REST views of the platform kernel: configuration."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from smsplatform.api.base import ServiceApiView, StrictInput
from smsplatform.config_service import (
    platform_config_get,
    platform_config_update,
    platform_config_versions,
)


def governed_response(result: dict[str, Any]) -> Response:
    """200 when executed, 202 when held for approval."""
    code = status.HTTP_202_ACCEPTED if result.get("status") == "pending_approval" else status.HTTP_200_OK
    return Response(result, status=code)


class ConfigApi(ServiceApiView):
    required_permissions = {
        "GET": "smsplatform.view_platformconfig",
        "PATCH": "smsplatform.change_platformconfig",
    }

    # Strict like every other write: a misspelt top-level field is refused, naming it, not dropped.
    class UpdateInput(StrictInput):
        changes = serializers.DictField(help_text="Settings to change, each given whole (see GET).")
        base_version_token = serializers.CharField(help_text="From GET; a stale token is refused.")
        idempotency_key = serializers.CharField(max_length=200)
        reason = serializers.CharField(required=False, allow_blank=True, default="")

    @extend_schema(
        operation_id="config_get",
        summary="Read the platform configuration (sms_marketing.config.get)",
    )
    def get(self, request: Request) -> Response:
        return Response(platform_config_get())

    @extend_schema(
        operation_id="config_update",
        summary="Change named settings; may be held for approval (202)",
        request=UpdateInput,
    )
    def patch(self, request: Request) -> Response:
        data = self.UpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        result = platform_config_update(actor=self.actor(request), **data.validated_data)
        return governed_response(result)


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
