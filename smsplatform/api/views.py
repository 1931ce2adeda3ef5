"""REST views of the platform kernel: the API index, configuration versions, health.

The configuration's own endpoint (GET and the governed PATCH) is ConfigApi in
gateways/api/views.py, beside the write it calls (the kernel imports no app)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from smsplatform.api.base import ServiceApiView
from smsplatform.api.schema import list_output, read_responses
from smsplatform.config_service import platform_config_versions


def governed_response(result: dict[str, Any]) -> Response:
    """200 when executed, 202 when held for approval."""
    code = status.HTTP_202_ACCEPTED if result.get("status") == "pending_approval" else status.HTTP_200_OK
    return Response(result, status=code)


class ConfigVersionsApi(ServiceApiView):
    required_permissions = {"GET": "smsplatform.view_platformconfig"}

    @extend_schema(
        operation_id="config_versions",
        summary="Configuration version history",
        responses=read_responses(list_output("ConfigVersionListOutput", "versions")),
    )
    def get(self, request: Request) -> Response:
        return Response({"versions": platform_config_versions()})


class HealthApi(APIView):
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="health",
        summary="Liveness and database check",
        responses=inline_serializer("HealthOutput", {"status": serializers.CharField()}),
    )
    def get(self, request: Request) -> Response:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return Response({"status": "ok"})


def _endpoints(patterns: list[Any], prefix: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for entry in patterns:
        if isinstance(entry, URLResolver):
            out += _endpoints(list(entry.url_patterns), prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            view = getattr(entry.callback, "cls", None)
            methods = [m.upper() for m in ("get", "post", "put", "patch", "delete") if hasattr(view, m)]
            doc = (getattr(view, "__doc__", None) or "").strip().splitlines()
            out.append(
                {
                    "path": "/" + prefix + str(entry.pattern),
                    "name": entry.name,
                    "methods": methods,
                    **({"description": doc[0]} if doc else {}),
                }
            )
    return out


class ApiIndexApi(APIView):
    """What the REST API offers, with the links to its schema and documentation."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="api_index",
        summary="This index: every endpoint with its methods, and the schema, docs and MCP links",
        responses=inline_serializer(
            "ApiIndexOutput",
            {
                "name": serializers.CharField(),
                "version": serializers.CharField(),
                "authentication": serializers.CharField(),
                "links": serializers.DictField(child=serializers.CharField()),
                "endpoints": serializers.ListField(child=serializers.DictField()),
            },
        ),
    )
    def get(self, request: Request) -> Response:
        # Read from the URL configuration as it is mounted, so the index never drifts from it.
        prefix, resolver = get_resolver().namespace_dict["api"]
        return Response(
            {
                "name": settings.SPECTACULAR_SETTINGS["TITLE"],
                "version": settings.SPECTACULAR_SETTINGS["VERSION"],
                "authentication": (
                    "Authorization: Bearer <API token> (issued in the admin under Platform > API tokens; "
                    "seed_demo prints demo ones), or an admin session."
                ),
                "links": {
                    "openapi_schema": request.build_absolute_uri(reverse("schema")),
                    "swagger_ui": request.build_absolute_uri(reverse("swagger-ui")),
                    "redoc": request.build_absolute_uri(reverse("redoc")),
                    "mcp_endpoint": request.build_absolute_uri(reverse("mcp")),
                    "admin": request.build_absolute_uri(reverse("admin:index")),
                },
                "endpoints": [
                    {**e, "url": request.build_absolute_uri(e["path"])}
                    for e in _endpoints(list(resolver.url_patterns), prefix)
                ],
            }
        )
