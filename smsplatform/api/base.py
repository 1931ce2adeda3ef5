"""The base every REST view shares (STYLE 11): permission check, actor, error shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.views import APIView

from smsplatform.kernel.actor import Actor, Channel
from smsplatform.kernel.errors import ApplicationError, ErrorCode, permission_denied

# Query parameters DRF itself understands (format negotiation); never refused.
QUERY_PASSTHROUGH = frozenset({"format"})


class StrictInput(serializers.Serializer):
    """A serializer that refuses undeclared fields, at any nesting level, as the MCP tools'
    schemas do (additionalProperties: false): a misspelt or protected field is an error naming
    it, never silently dropped."""

    passthrough: ClassVar[frozenset[str]] = frozenset()
    # Fields no interface may set (review, approval, opt-out, version data): a pointed hint.
    protected: ClassVar[frozenset[str]] = frozenset()

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - set(self.fields) - self.passthrough)
            if unknown:
                prefix = f"{self.field_name}." if getattr(self, "field_name", None) else ""
                name = unknown[0]
                hint = (
                    "Review, approval, opt-out and version data are never set through this interface."
                    if name in self.protected
                    else f"Accepted here: {', '.join(self.fields)}."
                )
                raise ApplicationError(
                    ErrorCode.VALIDATION_ERROR,
                    f"{prefix}{name} cannot be set here.",
                    field=f"{prefix}{name}",
                    hint=hint,
                )
        return super().to_internal_value(data)


class ServiceApiView(APIView):
    """Thin: parse, check the permission, call a service or selector, serialise."""

    # permission per HTTP method, e.g. {"GET": "smsplatform.view_platformconfig"}
    required_permissions: ClassVar[dict[str, str]] = {}

    def actor(self, request: Request) -> Actor:
        return Actor.for_request(request, Channel.API)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        perm = self.required_permissions.get(request.method or "")
        if perm and not self.actor(request).has_perm(perm):
            raise permission_denied(perm)
