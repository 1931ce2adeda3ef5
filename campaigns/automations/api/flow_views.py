"""REST views for automation flows (issue 17): list and create, update_state, dry run, funnel and a
contact's enrolments. Thin: parse, call the service or selector, serialise."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from campaigns.automations.flow_models import FlowState
from campaigns.automations.flow_services import (
    ADD,
    CHANGE,
    OPERATIONS,
    VIEW,
    flow_create,
    flow_get_or_404,
    flow_update_state,
)
from campaigns.automations.selectors import (
    contact_enrolments,
    flow_dry_run,
    flow_funnel,
    flow_summary,
    flows_list,
)
from campaigns.automations.spec import FIELDS, UPDATE_STATE_FIELDS
from campaigns.services.writes import write_args
from smsplatform.api.base import ServiceApiView, StrictInput
from smsplatform.api.schema import governed_responses, read_responses
from smsplatform.api.views import governed_response

VIEW_ENROLMENTS = "automations.view_enrolment"


class FlowListQuery(StrictInput):
    state = serializers.ChoiceField(choices=FlowState.choices, required=False)
    limit = serializers.IntegerField(min_value=1, max_value=200, required=False)


class FlowCreateInput(StrictInput):
    """The flow's fields (checked by the service) plus the write envelope."""

    passthrough = frozenset(FIELDS)
    idempotency_key = serializers.CharField(max_length=200)
    reason = serializers.CharField(max_length=1000, required=False, allow_blank=True)


class FlowStateInput(StrictInput):
    operation = serializers.ChoiceField(choices=[(o, o) for o in OPERATIONS])
    base_version_token = serializers.CharField(max_length=100)
    changes = serializers.DictField(required=False, help_text=f"Any of: {', '.join(UPDATE_STATE_FIELDS)}.")
    confirm = serializers.BooleanField(required=False)
    idempotency_key = serializers.CharField(max_length=200)
    reason = serializers.CharField(max_length=1000, required=False, allow_blank=True)


class DryRunQuery(StrictInput):
    days = serializers.IntegerField(min_value=1, max_value=90, required=False)


class EnrolmentQuery(StrictInput):
    contact_id = serializers.IntegerField(min_value=1)


def _query(serializer: type[StrictInput], request: Request) -> dict[str, Any]:
    data = serializer(data=request.query_params)
    data.is_valid(raise_exception=True)
    return dict(data.validated_data)


class FlowListApi(ServiceApiView):
    """Flows with their rules and numbers (sms_marketing.automations.list); new drafts."""

    required_permissions = {"GET": VIEW, "POST": ADD}

    @extend_schema(
        operation_id="automations_list",
        summary="Flows: trigger, limits, opt-out handling, template, gateway, state, numbers (automations.list)",
        parameters=[FlowListQuery],
        responses=read_responses(),
    )
    def get(self, request: Request) -> Response:
        return Response(flows_list(**_query(FlowListQuery, request)))

    @extend_schema(
        operation_id="automations_create",
        summary="Create a draft flow (nothing runs until it is activated)",
        request=FlowCreateInput,
        responses=governed_responses(),
    )
    def post(self, request: Request) -> Response:
        FlowCreateInput(data=request.data).is_valid(raise_exception=True)
        w = write_args(self.actor(request), dict(request.data))
        return Response(flow_create(actor=w.actor, data=w.fields, idempotency_key=w.idempotency_key, reason=w.reason))


class FlowDetailApi(ServiceApiView):
    required_permissions = {"GET": VIEW}

    @extend_schema(operation_id="automations_get", summary="One flow", responses=read_responses())
    def get(self, request: Request, flow_id: int) -> Response:
        flow = flow_get_or_404(flow_id)
        return Response({**flow_summary(flow), "funnel": flow_funnel(flow)})


class FlowStateApi(ServiceApiView):
    """Activate, pause, archive or update a flow (sms_marketing.automations.update_state)."""

    required_permissions = {"POST": CHANGE}

    @extend_schema(
        operation_id="automations_update_state",
        summary="Activate, pause, archive or update a flow, governed (sms_marketing.automations.update_state)",
        request=FlowStateInput,
        responses=governed_responses(),
    )
    def post(self, request: Request, flow_id: int) -> Response:
        data = FlowStateInput(data=request.data)
        data.is_valid(raise_exception=True)
        w = write_args(self.actor(request), data.validated_data)
        return governed_response(
            flow_update_state(
                actor=w.actor,
                flow_id=flow_id,
                operation=w.fields["operation"],
                base_version_token=w.base_version_token,
                changes=w.fields.get("changes"),
                confirm=w.confirm,
                idempotency_key=w.idempotency_key,
                reason=w.reason,
            )
        )


class FlowDryRunApi(ServiceApiView):
    required_permissions = {"GET": VIEW}

    @extend_schema(
        operation_id="automations_dry_run",
        summary="Which contacts would enter from the last N days' events (writes nothing)",
        parameters=[DryRunQuery],
        responses=read_responses(),
    )
    def get(self, request: Request, flow_id: int) -> Response:
        days = _query(DryRunQuery, request).get("days", 7)
        return Response(flow_dry_run(flow=flow_get_or_404(flow_id), days=days))


class EnrolmentListApi(ServiceApiView):
    required_permissions = {"GET": VIEW_ENROLMENTS}

    @extend_schema(
        operation_id="automations_enrolments",
        summary="A contact's enrolments in flows",
        parameters=[EnrolmentQuery],
        responses=read_responses(),
    )
    def get(self, request: Request) -> Response:
        contact_id = _query(EnrolmentQuery, request)["contact_id"]
        return Response({"enrolments": contact_enrolments(contact_id=contact_id)})
