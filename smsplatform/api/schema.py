"""OpenAPI declarations the REST views of every app share (documentation only, no behaviour).

The views answer with what the selectors and services return, so drf-spectacular cannot guess
their shapes: each view names its responses with these helpers (the error shape, the governed
write's 200/202 answer, a list with its count).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers


class ApiErrorDetail(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    field = serializers.CharField(allow_null=True)
    hint = serializers.CharField(allow_null=True)
    details = serializers.DictField(required=False)


class ApiErrorOutput(serializers.Serializer):
    error = ApiErrorDetail()


class GovernedWriteOutput(serializers.Serializer):
    status = serializers.ChoiceField(choices=["executed", "pending_approval"])
    action = serializers.CharField()
    result = serializers.DictField(required=False, help_text="When executed: what the service returned.")
    action_request_id = serializers.IntegerField(required=False, help_text="When held for approval.")
    required_role = serializers.CharField(required=False)
    policy = serializers.CharField(required=False)
    expires_at = serializers.DateTimeField(required=False)
    hint = serializers.CharField(required=False)


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """400 (validation), 401 (no or bad token), 403 (permission) and the view's own codes."""
    return {code: OpenApiResponse(ApiErrorOutput) for code in (400, 401, 403, *codes)}


def read_responses(output: Any = OpenApiTypes.OBJECT, *codes: int, description: str = "") -> dict[int, Any]:
    """A read: 200 with ``output`` (a serializer, or a JSON object described in words)."""
    return {200: OpenApiResponse(output, description=description), **error_responses(*codes)}


def governed_responses(*codes: int) -> dict[int, Any]:
    """A governed write: 200 when executed, 202 when held for approval as an action request."""
    return {
        200: OpenApiResponse(GovernedWriteOutput, description="Executed"),
        202: OpenApiResponse(GovernedWriteOutput, description="Held for approval (pending_approval)"),
        **error_responses(*codes),
    }


def list_output(name: str, key: str, help_text: str = "") -> Any:
    """``{<key>: [...], "count": n}``, the shape of every list read."""
    return inline_serializer(
        name=name,
        fields={
            key: serializers.ListField(child=serializers.DictField(), help_text=help_text),
            "count": serializers.IntegerField(),
        },
    )
