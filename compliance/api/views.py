"""REST views of the compliance app."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from compliance.models import ActionType
from compliance.roles import Role
from compliance.selectors import (
    action_request_status,
    approval_policies_list,
    owners_list,
)
from smsplatform.api.base import ServiceApiView
from smsplatform.api.schema import list_output, read_responses
from smsplatform.kernel.errors import ApplicationError, ErrorCode


def _choice(request: Request, name: str, allowed: list[str]) -> str | None:
    value = request.query_params.get(name)
    # Present but empty is not "no filter": the schema's enum has no "", so it is refused.
    if value is not None and value not in allowed:
        raise ApplicationError(
            ErrorCode.VALIDATION_ERROR,
            f"{name} must be one of {', '.join(allowed)}.",
            field=name,
            hint=f"Leave {name} out to list all.",
        )
    return value


class ApprovalPolicyListApi(ServiceApiView):
    required_permissions = {"GET": "compliance.view_approvalpolicy"}

    @extend_schema(
        operation_id="approval_policies_list",
        summary="Approval policies (sms_marketing.approval_policies.list)",
        parameters=[OpenApiParameter("action", str, enum=list(ActionType.values))],
        responses=read_responses(list_output("ApprovalPolicyListOutput", "policies")),
    )
    def get(self, request: Request) -> Response:
        policies = approval_policies_list(action=_choice(request, "action", list(ActionType.values)))
        return Response({"policies": policies, "count": len(policies)})


class OwnerListApi(ServiceApiView):
    required_permissions = {"GET": "compliance.view_owners"}

    @extend_schema(
        operation_id="owners_list",
        summary="Owners, roles and capabilities (sms_marketing.owners.list)",
        parameters=[OpenApiParameter("role", str, enum=[r.value for r in Role])],
        responses=read_responses(list_output("OwnerListOutput", "owners")),
    )
    def get(self, request: Request) -> Response:
        owners = owners_list(role=_choice(request, "role", [r.value for r in Role]))
        return Response({"owners": owners, "count": len(owners)})


class ActionRequestStatusApi(ServiceApiView):
    required_permissions = {"GET": "compliance.view_actionrequest"}

    @extend_schema(
        operation_id="action_request_status",
        summary="Status of an action request (sms_marketing.action_request.status)",
        responses=read_responses(
            OpenApiTypes.OBJECT, 404, description="The request's state, summary, decision and outcome."
        ),
    )
    def get(self, request: Request, action_request_id: int) -> Response:
        return Response(action_request_status(actor=self.actor(request), action_request_id=action_request_id))
