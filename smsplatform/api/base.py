"""The base every REST view shares (STYLE 11): permission check, actor, error shape."""

from __future__ import annotations

from typing import Any, ClassVar

from rest_framework.request import Request
from rest_framework.views import APIView

from smsplatform.kernel.actor import Actor, Channel
from smsplatform.kernel.errors import permission_denied


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
